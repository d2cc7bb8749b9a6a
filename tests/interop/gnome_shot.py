"""One screenshot of a GNOME (mutter) monitor, taken independently of spiceserver's source.

Run by Debian's ``/usr/bin/python3`` (python3-gi): its own ScreenCast session (no remote
desktop) through Gio's D-Bus, its own ``pipewiresrc`` pipeline, the first frame written raw
(B,G,R,x rows) to PATH; prints ``{"width": W, "height": H}``.  mutter without gnome-shell has
no ``org.gnome.Shell.Screenshot``, so this is the screenshot the tests compare with.

    python3 gnome_shot.py BUS_ADDRESS CONNECTOR PATH
"""

from __future__ import annotations

import json
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gio, GLib, Gst  # noqa: E402

SC = "org.gnome.Mutter.ScreenCast"
TIMEOUT_MS = 10_000


def call(bus: Gio.DBusConnection, path: str, iface: str, method: str, args: GLib.Variant | None):
    return bus.call_sync(
        SC, path, iface, method, args, None, Gio.DBusCallFlags.NONE, TIMEOUT_MS, None
    )


def main(address: str, connector: str, out: str) -> int:
    flags = (
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
    )
    bus = Gio.DBusConnection.new_for_address_sync(address, flags, None, None)
    (session,) = call(
        bus, "/org/gnome/Mutter/ScreenCast", SC, "CreateSession", GLib.Variant("(a{sv})", ({},))
    ).unpack()
    cursor = {"cursor-mode": GLib.Variant("u", 1)}  # embedded, as the source records
    (stream,) = call(
        bus,
        session,
        f"{SC}.Session",
        "RecordMonitor",
        GLib.Variant("(sa{sv})", (connector, cursor)),
    ).unpack()
    loop = GLib.MainLoop()
    node: list[int] = []

    def added(*args: object) -> None:
        node.append(int(args[5].unpack()[0]))  # type: ignore[attr-defined]
        loop.quit()

    bus.signal_subscribe(
        SC, f"{SC}.Stream", "PipeWireStreamAdded", stream, None, Gio.DBusSignalFlags.NONE, added
    )
    call(bus, session, f"{SC}.Session", "Start", None)
    GLib.timeout_add(TIMEOUT_MS, loop.quit)
    loop.run()
    if not node:
        print(json.dumps({"error": "no PipeWireStreamAdded"}))
        return 1
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"pipewiresrc path={node[0]} ! videoconvert ! video/x-raw,format=BGRx ! "
        "appsink name=sink max-buffers=1 drop=true sync=false"
    )
    pipeline.set_state(Gst.State.PLAYING)
    sink = pipeline.get_by_name("sink")
    try:
        for _ in range(40):
            sample = sink.emit("try-pull-sample", 250 * Gst.MSECOND)
            if sample is None or sample.get_buffer().get_size() == 0:
                continue
            caps = sample.get_caps().get_structure(0)
            width, height = caps.get_value("width"), caps.get_value("height")
            buffer = sample.get_buffer()
            data = buffer.extract_dup(0, buffer.get_size())
            stride = len(data) // height
            with open(out, "wb") as f:
                for row in range(height):
                    f.write(data[row * stride : row * stride + width * 4])
            print(json.dumps({"width": width, "height": height}))
            return 0
        print(json.dumps({"error": "no frame"}))
        return 1
    finally:
        pipeline.set_state(Gst.State.NULL)
        call(bus, session, f"{SC}.Session", "Stop", None)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
