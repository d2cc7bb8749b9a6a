"""The layout controller: debounce, apply on change only, no loops, restore, off, one at a time.

Time is injected: :class:`FakeTimers` stands in for ``loop.call_later``, so the debounce is
exact and no test sleeps.  The source's ``apply_layout`` is a coroutine the tests can hold
open (an asyncio event) to see what happens to requests that arrive meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from spiceserver.server.layout import (
    MAX_HEAD_SIDE,
    MAX_HEADS,
    LayoutController,
    normalize_layout,
)
from spiceserver.session import Session
from spiceserver.sources.base import FramebufferSource, Head
from tests.conftest import run


class FakeTimers:
    """``call_later`` on a clock that moves only in :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[_Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in sorted(self.timers, key=lambda t: t.due):
            if timer.due <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()
        self.timers = [t for t in self.timers if not t.cancelled]

    @property
    def armed(self) -> int:
        return sum(not t.cancelled for t in self.timers)


class _Timer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due, self.callback, self.cancelled = due, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Resizable(FramebufferSource):
    """Takes any layout, optionally rounding widths down to multiples of ``round_to`` (as an
    Xorg applier would); ``gate`` holds ``apply_layout`` open until set."""

    kind = "test"

    def __init__(self, *, accept: bool = True, round_to: int = 1) -> None:
        super().__init__(640, 480)
        self.accept, self.round_to = accept, round_to
        self.layout: tuple[Head, ...] = (Head(0, 0, 640, 480),)
        self.calls: list[tuple[Head, ...]] = []
        self.restores = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def heads(self) -> tuple[Head, ...]:
        return self.layout

    async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
        self.calls.append(heads)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if not self.accept:
            return False
        r = self.round_to
        self.layout = tuple(Head(h.x, h.y, h.width // r * r, h.height) for h in heads)
        return True

    async def restore_layout(self) -> None:
        self.restores += 1
        self.layout = (Head(0, 0, 640, 480),)


def session(number: int) -> Session:
    return Session(id=number, main=None)


def one(width: int, height: int) -> tuple[Head, ...]:
    return (Head(0, 0, width, height),)


async def settle(controller: LayoutController) -> None:
    """Until the controller's worker has nothing left to do (bounded)."""
    async with asyncio.timeout(5):
        while controller._task is not None:  # (a pending request waits for the fake timer)
            await controller.settled.wait()


async def ask(
    controller: LayoutController, timers: FakeTimers, who: Session, heads: tuple[Head, ...]
) -> None:
    """A request, its debounce time passed, and whatever it led to done."""
    controller.request(who, heads)
    timers.advance(1)
    await settle(controller)


def make(source: FramebufferSource, **options: object) -> tuple[LayoutController, FakeTimers]:
    timers = FakeTimers()
    controller = LayoutController(
        source,
        debounce=0.25,
        call_later=timers.call_later,
        **options,  # type: ignore[arg-type]
    )
    return controller, timers


def test_requests_are_debounced_and_the_last_one_wins() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a, b = session(1), session(2)
        controller.request(a, one(800, 600))
        timers.advance(0.2)
        controller.request(b, one(1024, 768))  # another client, later: it wins
        timers.advance(0.2)  # 0.4 s after the first request, 0.2 s after the last
        await asyncio.sleep(0)
        assert source.calls == []
        controller.request(b, one(1280, 720))
        timers.advance(0.24)
        await asyncio.sleep(0)
        assert source.calls == []
        timers.advance(0.01)  # 0.25 s after the last change
        await settle(controller)
        assert source.calls == [one(1280, 720)]
        assert controller.applied == 1

    run(scenario())


def test_a_repeated_request_does_not_postpone_the_change() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a = session(1)
        for _ in range(5):  # the same size every 0.1 s: applied 0.25 s after the first
            controller.request(a, one(800, 600))
            timers.advance(0.1)
        await settle(controller)
        assert source.calls == [one(800, 600)]
        assert timers.armed == 0

    run(scenario())


def test_only_a_change_is_applied_and_answers_to_the_new_surface_end_the_exchange() -> None:
    async def scenario() -> None:
        # An Xorg-like source that rounds widths down to multiples of 8: 1283 becomes 1280.
        source = Resizable(round_to=8)
        controller, timers = make(source)
        web = session(1)
        controller.request(web, one(640, 480))  # what the source shows already
        timers.advance(1)
        await settle(controller)
        assert source.calls == []
        await ask(controller, timers, web, one(1283, 720))
        assert source.heads() == one(1280, 720)
        # A web client sizing its window to what it asked for, or to the surface it got,
        # and sending that back: neither is applied again, so the exchange ends.
        for heads in (one(1283, 720), one(1280, 720), one(1283, 720)):
            await ask(controller, timers, web, heads)
        assert source.calls == [one(1283, 720)]
        assert controller.applied == 1

    run(scenario())


def test_the_layout_is_restored_when_the_last_session_that_changed_it_ends() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a, b, viewer = session(1), session(2), session(3)
        await ask(controller, timers, a, one(800, 600))
        controller.request(b, one(800, 600))  # b's window wants the same: b holds it too
        timers.advance(1)
        await settle(controller)
        assert source.calls == [one(800, 600)]
        controller.session_ended(a)
        await settle(controller)
        assert source.restores == 0  # b still looks at that layout
        controller.session_ended(viewer)  # never asked for anything: changes nothing
        await settle(controller)
        assert source.restores == 0
        controller.session_ended(b)
        await settle(controller)
        assert source.restores == 1 and controller.restored == 1
        assert source.heads() == one(640, 480)
        controller.session_ended(b)  # twice: still one restore
        await settle(controller)
        assert source.restores == 1

    run(scenario())


def test_no_restore_while_another_sessions_request_is_pending() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a, b = session(1), session(2)
        await ask(controller, timers, a, one(800, 600))
        controller.request(b, one(1024, 768))
        controller.session_ended(a)  # b's layout is on its way: no restore in between
        await settle(controller)
        assert source.restores == 0
        timers.advance(1)
        await settle(controller)
        assert source.calls == [one(800, 600), one(1024, 768)]
        assert source.restores == 0
        controller.session_ended(b)
        await settle(controller)
        assert source.restores == 1

    run(scenario())


def test_a_session_that_ends_before_its_layout_is_due_is_forgotten() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a = session(1)
        controller.request(a, one(800, 600))
        a.alive = False
        controller.session_ended(a)
        timers.advance(1)
        await settle(controller)
        assert source.calls == [] and source.restores == 0

    run(scenario())


def test_a_newer_request_while_the_source_applies_is_applied_after_it() -> None:
    async def scenario() -> None:
        source = Resizable()
        source.gate = asyncio.Event()
        controller, timers = make(source)
        a, b = session(1), session(2)
        controller.request(a, one(800, 600))
        timers.advance(1)
        async with asyncio.timeout(5):
            await source.entered.wait()  # the source is applying 800x600 now
        controller.request(b, one(1024, 768))
        controller.request(a, one(1280, 720))  # newer still: this one follows
        timers.advance(1)
        await asyncio.sleep(0)
        assert source.calls == [one(800, 600)]  # one at a time
        source.gate.set()
        await settle(controller)
        assert source.calls == [one(800, 600), one(1280, 720)]

    run(scenario())


def test_resize_off_ignores_every_request() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source, mode="off")
        controller.request(session(1), one(800, 600))
        assert timers.armed == 0
        timers.advance(1)
        await settle(controller)
        assert source.calls == []
        assert controller.max_heads(1) == 1  # clients are not offered more monitors

    run(scenario())


def test_a_source_that_cannot_follow_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        source = Resizable(accept=False)
        controller, timers = make(source)
        a = session(1)
        for size in ((800, 600), (1024, 768), (800, 600)):
            await ask(controller, timers, a, one(*size))
        controller.request(a, one(800, 600))  # the same refused request again: not retried
        timers.advance(1)
        await settle(controller)
        assert len(source.calls) == 3 and controller.refused == 3
        controller.session_ended(a)
        await settle(controller)
        assert source.restores == 0  # nothing was changed

    with caplog.at_level(logging.INFO, logger="spiceserver.layout"):
        run(scenario())
    lines = [r for r in caplog.records if "resize not supported by this source" in r.message]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


def test_the_default_source_cannot_follow() -> None:
    async def scenario() -> None:
        source = FramebufferSource(320, 200)
        controller, timers = make(source)
        assert controller.max_heads(1) == 1  # clients are offered no more monitors
        await ask(controller, timers, session(1), one(800, 600))
        assert controller.refused == 1 and source.size == (320, 200)
        declining, _ = make(Resizable(accept=False))
        assert declining.max_heads(2) == MAX_HEADS  # until it has declined once

    run(scenario())


def test_closing_restores_a_changed_layout() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a = session(1)
        await ask(controller, timers, a, one(800, 600))
        controller.request(a, one(1024, 768))  # pending when the server closes: dropped
        await controller.aclose()
        assert source.calls == [one(800, 600)] and source.restores == 1
        controller.request(a, one(1280, 720))  # after close: ignored
        assert timers.armed == 0

    run(scenario())


def test_normalize_layout_drops_clamps_and_moves_heads() -> None:
    heads = (
        Head(100, 50, 800, 600, 300, 170),
        Head(0, 0, 0, 0),  # disabled
        Head(900, 50, 99999, 600),
        Head(5, 5, -4, 10),
    )
    layout, notes = normalize_layout(heads)
    assert layout == (Head(0, 0, 800, 600, 300, 170), Head(800, 0, MAX_HEAD_SIDE, 600))
    assert "2 head(s) without a size dropped" in notes and "clamped" in notes
    many = tuple(Head(i * 100, 0, 100, 100) for i in range(MAX_HEADS + 4))
    layout, notes = normalize_layout(many)
    assert len(layout) == MAX_HEADS and "dropped" in notes
    assert normalize_layout((Head(0, 0, 0, 10),))[0] == ()
    huge = (Head(0, 0, 8192, 8192), Head(8192, 0, 8192, 8192))  # 16384 x 8192: too many pixels
    assert normalize_layout(huge)[0] == ()
    four_4k = tuple(Head(x, y, 3840, 2160) for x in (0, 3840) for y in (0, 2160))
    assert normalize_layout(four_4k) == (four_4k, "")
    far = (Head(0, 0, 100, 100), Head(20000, 0, 100, 100))
    assert normalize_layout(far)[0] == ()
    assert normalize_layout(one(1280, 720)) == (one(1280, 720), "")


def test_a_refused_request_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        controller.request(session(1), (Head(0, 0, 0, 0),))
        assert timers.armed == 0

    with caplog.at_level(logging.INFO, logger="spiceserver.layout"):
        run(scenario())
    assert any("layout request refused" in r.message for r in caplog.records)


def test_when_the_winner_leaves_the_newest_request_left_takes_over() -> None:
    async def scenario() -> None:
        source = Resizable()
        controller, timers = make(source)
        a, b = session(1), session(2)
        await ask(controller, timers, a, one(800, 600))
        await ask(controller, timers, b, one(1024, 768))
        controller.session_ended(b)  # a's window still wants 800x600: it gets it back
        timers.advance(1)
        await settle(controller)
        assert source.calls == [one(800, 600), one(1024, 768), one(800, 600)]
        assert source.restores == 0
        controller.session_ended(a)
        await settle(controller)
        assert source.restores == 1

    run(scenario())


def test_a_session_that_leaves_while_its_layout_is_applied_gets_it_restored() -> None:
    async def scenario() -> None:
        source = Resizable()
        source.gate = asyncio.Event()
        controller, timers = make(source)
        a = session(1)
        controller.request(a, one(800, 600))
        timers.advance(1)
        async with asyncio.timeout(5):
            await source.entered.wait()
        a.alive = False
        controller.session_ended(a)
        source.gate.set()
        await settle(controller)
        assert source.calls == [one(800, 600)] and source.restores == 1
        assert source.heads() == one(640, 480)

    run(scenario())


def test_a_source_that_fails_is_logged_and_not_called_unsupported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Resizable):
        async def apply_layout(self, heads: tuple[Head, ...]) -> bool:
            raise RuntimeError("BadMatch")

    async def scenario() -> None:
        controller, timers = make(Broken())
        await ask(controller, timers, session(1), one(800, 600))
        assert controller.refused == 1 and controller.follows

    with caplog.at_level(logging.INFO, logger="spiceserver.layout"):
        run(scenario())
    assert any("failed to apply layout" in r.message for r in caplog.records)
    assert not any("not supported" in r.message for r in caplog.records)
