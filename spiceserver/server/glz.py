"""GLZ dictionaries: a bounded number per session, a memory budget, release when a session ends.

A GLZ dictionary mirrors the client's GLZ window, which spice-gtk keeps per session
(``spice-gtk:src/decode-glz.c``) and shares between the session's display channels; DISPLAY_INIT
names it by ``glz_dictionary_id`` (a u8).  libspice-server shares one dictionary per client and
id (``spice:server/image-encoders.cpp`` ``image_encoders_get_glz_dictionary``).  Here:

* a session holds at most ``glz_dictionaries_per_session`` (default 1): a display naming a new
  id replaces a dictionary no live display of the session uses, and gets none (LZ is sent) if
  every one is in use;
* a dictionary keeps at most one frame of the source (``frame_pixels``; followed when the
  source is resized: :meth:`GlzDictionaries.follow_frame`), less than spice-gtk's
  smallest window (3,145,728 pixels; 12 MiB here) on a 1920x1080 screen: the client's window
  is an upper bound, and the server may keep less.  The older half frame that the client's
  window would also reach bought nothing on desktop sequences (``man xterm`` paged forward and
  back, switching between full-screen corpus frames: the same bytes to 0.02%), while a
  dictionary smaller than a frame splits full-screen images (6% more bytes at 1.5 M pixels);
* all sessions together hold at most ``glz_memory_budget`` bytes, each dictionary counted at
  what the client's window would let it come to (at most 33.4 MiB), not at the frame it is
  limited to: so the budget still decides, as before that limit, how many sessions get GLZ at
  all.  Each session encodes its own GLZ images while LZ and QUIC images are shared
  (``encode_cache.py``); charged at a 1024x768 frame, all of 100 sessions got GLZ and the
  server fell behind (``bench_clients --steps 1,40,100``: 16.6 fps and 461 MiB at 100
  against 27 fps and 208 MiB).  A session that would cross the budget gets a smaller
  dictionary, or none when less than :data:`MIN_DICTIONARY_BYTES` is left;
* when the session ends its dictionaries are dropped at once.  They are referenced from here
  only: display channels borrow them through a weak reference
  (:meth:`~spiceserver.server.codecs.ImageEncoder.borrow_glz`), so no reference cycle keeps
  33 MiB alive until the garbage collector runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from encoders.glz import GlzDictionary
    from spiceserver.session import Session

__all__ = ["MIN_DICTIONARY_BYTES", "GlzDictionaries"]

logger = logging.getLogger("spiceserver.codecs")

#: A dictionary smaller than this (one 1024x1024 window) is not worth making: LZ instead.
MIN_DICTIONARY_BYTES = 4 * 1024 * 1024
#: Bytes per kept pixel (the arena is uint32).
_PIXEL_BYTES = 4
#: Bytes of a dictionary besides its arena (hash tables, image records), measured once.
_tables: int | None = None


@dataclass(eq=False, slots=True)
class _Entry:
    dictionary: GlzDictionary
    #: Pixels the budget lets it keep (the client's window, capped), whatever the frame.
    share: int
    #: Bytes of the budget it takes (see the module's docstring).
    charge: int
    #: The display connections that use it (``closed`` tells whether one still does).
    owners: list[Any] = field(default_factory=list)

    def in_use(self) -> bool:
        self.owners = [owner for owner in self.owners if not owner.closed]
        return bool(self.owners)


class GlzDictionaries:
    """Every session's GLZ dictionaries, within a per-session count and a global budget."""

    def __init__(self, budget: int, per_session: int) -> None:
        self.budget = budget
        self.per_session = per_session
        #: Bytes of the budget the dictionaries held now take (their ``charge``).
        self.used = 0

    def attach(
        self,
        session: Session,
        dictionary_id: int,
        window_pixels: int,
        owner: Any,
        frame_pixels: int | None = None,
    ) -> GlzDictionary | None:
        """The dictionary a display channel of ``session`` encodes into, for its
        DISPLAY_INIT's id and window, keeping at most ``frame_pixels`` (the source's frame;
        None: the client's window); None: no GLZ for it (the encoder sends LZ)."""
        entries: dict[int, _Entry] = session.glz_dictionaries
        entry = entries.get(dictionary_id)
        if entry is not None:  # the session's window, shared (a display reconnecting)
            entry.in_use()
            entry.owners.append(owner)
            return entry.dictionary
        for other_id, other in list(entries.items()):
            if len(entries) < self.per_session:
                break
            if not other.in_use():
                self._drop(entries, other_id)
        if len(entries) >= self.per_session:
            logger.info(
                "session %#010x: GLZ dictionary %d refused: %d in use "
                "(glz_dictionaries_per_session); sending LZ",
                session.id,
                dictionary_id,
                len(entries),
            )
            return None
        made = self._make(window_pixels, frame_pixels)
        if made is None:
            logger.info(
                "session %#010x: no GLZ dictionary: %d of %d bytes in use (glz_memory_budget); "
                "sending LZ",
                session.id,
                self.used,
                self.budget,
            )
            return None
        dictionary, share, charge = made
        entries[dictionary_id] = _Entry(dictionary, share, charge, [owner])
        self.used += charge
        return dictionary

    def follow_frame(self, session: Session, frame_pixels: int) -> None:
        """The source's frame has a new size: the session's dictionaries keep up to one frame
        of it (within their share of the budget)."""
        for entry in session.glz_dictionaries.values():
            entry.dictionary.set_capacity(max(1, min(entry.share, frame_pixels)))

    def release(self, session: Session) -> None:
        """The session ended: its dictionaries go now."""
        entries: dict[int, _Entry] = session.glz_dictionaries
        for dictionary_id in list(entries):
            self._drop(entries, dictionary_id)

    def _drop(self, entries: dict[int, _Entry], dictionary_id: int) -> None:
        entry = entries.pop(dictionary_id)
        self.used -= entry.charge

    def _make(
        self, window_pixels: int, frame_pixels: int | None
    ) -> tuple[GlzDictionary, int, int] | None:
        """A dictionary, its share and its charge; None when the budget has no useful room."""
        from encoders.glz.dictionary import DEFAULT_MAX_PIXELS, GlzDictionary

        global _tables
        if _tables is None:
            _tables = GlzDictionary(0).max_nbytes - _PIXEL_BYTES  # a one-pixel arena: the rest
        tables = _tables
        free = self.budget - self.used
        share = min(window_pixels, DEFAULT_MAX_PIXELS, (free - tables) // _PIXEL_BYTES)
        if share * _PIXEL_BYTES + tables < MIN_DICTIONARY_BYTES and share < window_pixels:
            return None  # too little room for a useful window
        if share < 1:
            return None
        pixels = share if frame_pixels is None else max(1, min(share, frame_pixels))
        dictionary = GlzDictionary(window_pixels, max_pixels=pixels)
        return dictionary, share, share * _PIXEL_BYTES + tables
