"""A pcap writer that wraps one TCP connection's bytes in fake Ethernet/IPv4/TCP headers.

Why fake packets: the server only sees the byte streams of its sockets (after TLS, were there
any), not packets.  Wireshark's SPICE dissector, though, sits on top of TCP, so each stream is
written as a plausible TCP conversation: a three-way handshake, data segments of at most
:data:`MSS` bytes with running sequence and acknowledgement numbers, an ACK from the receiving
side after each write, and a FIN exchange at the end.  Lengths and checksums are correct, so
Wireshark's checksum validation and TCP analysis stay quiet, and the server side is always port
:data:`SERVER_PORT` (5900) whatever port the server really listens on, so
``tshark -d tcp.port==5900,spice`` decodes every capture.

Formats:

* File: libpcap format (https://wiki.wireshark.org/Development/LibpcapFileFormat, also
  draft-ietf-opsawg-pcap): a 24-byte global header with magic ``0xA1B2C3D4`` (microsecond
  timestamps), version 2.4, and link type 1 (``LINKTYPE_ETHERNET``); then one 16-byte record
  header (``ts_sec``, ``ts_usec``, ``incl_len``, ``orig_len``) per packet.
* Ethernet II: destination MAC, source MAC, EtherType 0x0800 (IPv4).
* IPv4 (RFC 791 §3.1): 20-byte header without options, DF set, TTL 64, protocol 6 (TCP);
  header checksum per RFC 791 / RFC 1071.
* TCP (RFC 793 §3.1): 20-byte header (28 on SYNs, which carry MSS and window-scale options,
  RFC 7323 §2); checksum over the pseudo-header (source, destination, zero, protocol, TCP
  length), the header and the data, per RFC 793 / RFC 1071.

Everything here is synchronous and pure apart from ``file.write``: the caller decides when to
write (the asyncio layer calls it from the event loop as bytes are sent and received), and
nothing is kept in memory besides the current segment.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np

__all__ = [
    "CLIENT",
    "MSS",
    "SERVER",
    "SERVER_PORT",
    "PcapFile",
    "TcpFlow",
    "checksum",
    "ones_complement_sum",
]

#: The server side of every fake connection, so one ``Decode As`` rule fits all captures.
SERVER_PORT: Final = 5900
#: Largest TCP payload per segment: 65535 (IPv4 total length) - 20 (IPv4) - 20 (TCP).
MSS: Final = 65495
#: pcap snaplen: whole packets are always recorded (tcpdump's default).
SNAPLEN: Final = 262144
#: LINKTYPE_ETHERNET (https://www.tcpdump.org/linktypes.html).
LINKTYPE_ETHERNET: Final = 1
#: Window scale shift announced on the SYNs: the 16-bit window field then means up to 1 GiB,
#: so a multi-megabyte screen update never shows as "window full" in Wireshark.
WINDOW_SHIFT: Final = 14

#: Directions of a flow.
CLIENT: Final = 0
SERVER: Final = 1

# TCP flags (RFC 793 §3.1).
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10

_PCAP_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, net
_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
_ETHERNET = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_SYN_OPTIONS = struct.Struct("!BBHBBBB")  # MSS (kind 2, len 4), NOP, window scale (3, 3)


class RawStream(Protocol):
    def write(self, data: memoryview, /) -> int | None: ...

    def truncate(self, size: int, /) -> int: ...

    def close(self) -> None: ...


#: Locally administered MAC addresses for the two ends.
_MACS = (b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02")
#: Stand-ins for peers that have no IPv4 address (IPv6, Unix sockets): RFC 5737 TEST-NET-1.
_FAKE_ADDRESSES = ("192.0.2.1", "192.0.2.2")
#: Below this many bytes a Python int sums faster than numpy.
_NUMPY_SUM_MIN = 512


class PcapFile:
    """An append-only pcap file that only ever leaves whole records on disk.

    Small records are gathered in a buffer (``buffer_size``) and written with the unbuffered
    ``raw`` stream; a large payload is written straight from the caller's memory, after the
    buffer.  If a write fails (disk full, I/O error), the file is truncated back to the end of
    the last record known to be complete before the error is raised, so the capture up to
    there stays readable.

    Args:
        raw: an unbuffered binary stream (``open(path, "xb", buffering=0)``, or ``io.BytesIO``).
    """

    def __init__(self, raw: RawStream, buffer_size: int = 64 * 1024) -> None:
        self.raw = raw
        self.buffer_size = buffer_size
        self._buffer = bytearray(
            _PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
        )
        #: Where each record in the buffer (the global header first) ends.
        self._ends = [len(self._buffer)]
        #: Bytes of whole records (and the global header) known to be on disk.
        self.complete = 0
        self.closed = False

    def write_record(self, header: bytes, payload: bytes | memoryview = b"") -> None:
        """Append one record: ``header`` (record header and packet headers), then ``payload``."""
        if len(payload) > self.buffer_size:
            self._ends.append(len(self._buffer) + len(header) + len(payload))
            self._write((self._buffer, header, payload))
            return
        self._buffer += header
        self._buffer += payload
        self._ends.append(len(self._buffer))
        if len(self._buffer) >= self.buffer_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._write((self._buffer,))

    def close(self) -> None:
        """Flush and close (idempotent); the file is closed even if the flush fails."""
        if self.closed:
            return
        self.closed = True
        try:
            self.flush()
        finally:
            self.raw.close()

    def _write(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        written = 0
        try:
            for part in parts:
                with memoryview(part) as view:
                    size = view.nbytes
                    done = self.raw.write(view) or 0
                    written += done
                    while done < size:  # a short write: continue, or fail on the next
                        with view[done:] as rest:
                            n = self.raw.write(rest)
                        if not n:
                            raise OSError("short write")
                        done += n
                        written += n
        except BaseException:
            # Keep the records that reached the disk whole; cut a half-written one off.
            kept = max((end for end in self._ends if end <= written), default=0)
            self.complete += kept
            # A new buffer, not clear(): the failed write's traceback may still hold a view.
            self._buffer = bytearray()
            self._ends = []
            with contextlib.suppress(OSError):
                self.raw.truncate(self.complete)
            raise
        self.complete += written
        self._buffer = bytearray()
        self._ends = []


def ones_complement_sum(data: bytes | memoryview) -> int:
    """The RFC 1071 sum of ``data`` as big-endian 16-bit words (odd tail padded), mod 0xFFFF.

    The result is only meaningful modulo 0xFFFF: sums of several parts may be added together
    as long as every part but the last has an even length.
    """
    n = len(data)
    if n < _NUMPY_SUM_MIN:
        value = int.from_bytes(data, "big")
        return (value << 8 if n & 1 else value) % 0xFFFF
    view = memoryview(data).cast("B")
    total = int(np.frombuffer(view[: n & ~1], dtype=">u2").sum(dtype=np.uint64))
    if n & 1:
        total += view[n - 1] << 8
    return total % 0xFFFF


def checksum(partial_sum: int) -> int:
    """The Internet checksum (RFC 1071) from a :func:`ones_complement_sum` of the data."""
    folded = partial_sum % 0xFFFF
    # In ones' complement arithmetic a non-zero sum is never 0 (it is 0xFFFF, "negative
    # zero"); every sum passed here includes a non-zero protocol number, so map 0 to 0xFFFF.
    return ~(folded or 0xFFFF) & 0xFFFF


def _ipv4(address: str | None, fallback: str) -> bytes:
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        parsed = ipaddress.IPv4Address(fallback)
    if isinstance(parsed, ipaddress.IPv6Address):
        parsed = parsed.ipv4_mapped or ipaddress.IPv4Address(fallback)
    return parsed.packed


class TcpFlow:
    """One fake TCP connection written into an open pcap file.

    Args:
        file: the pcap file the packets go to.
        client: the client's address and port (IPv4 is kept; anything else is replaced by a
            TEST-NET address); the server end is ``server_address``:5900.
        isn: initial sequence numbers of the client and the server sides.
    """

    def __init__(
        self,
        file: PcapFile,
        client: tuple[str | None, int],
        server_address: str | None = None,
        *,
        isn: tuple[int, int] = (0x1000_0000, 0x2000_0000),
    ) -> None:
        self.file = file
        client_port = client[1] if 0 < client[1] < 65536 and client[1] != SERVER_PORT else 40000
        self._ips = (
            _ipv4(client[0], _FAKE_ADDRESSES[0]),
            _ipv4(server_address, _FAKE_ADDRESSES[1]),
        )
        self._ports = (client_port, SERVER_PORT)
        #: Next sequence number each side sends (the other side's acknowledgement number).
        self.seq = [isn[0] & 0xFFFF_FFFF, isn[1] & 0xFFFF_FFFF]
        self._ip_id = [1, 1]
        # The pseudo-header sum without the TCP length, the same for every segment one way.
        self._pseudo = [
            ones_complement_sum(_PSEUDO.pack(self._ips[d], self._ips[1 - d], 0, 6, 0))
            for d in (CLIENT, SERVER)
        ]
        self.packets = 0
        self.closed = False

    def open(self, ts: float) -> None:
        """The three-way handshake: SYN, SYN-ACK, ACK (each SYN uses one sequence number)."""
        self._segment(CLIENT, SYN, b"", ts, syn_options=True)
        self.seq[CLIENT] = (self.seq[CLIENT] + 1) & 0xFFFF_FFFF
        self._segment(SERVER, SYN | ACK, b"", ts, syn_options=True)
        self.seq[SERVER] = (self.seq[SERVER] + 1) & 0xFFFF_FFFF
        self._segment(CLIENT, ACK, b"", ts)

    def data(self, direction: int, chunks: Sequence[bytes | memoryview], ts: float) -> None:
        """``chunks`` sent by ``direction`` at ``ts``: MSS-sized PSH/ACK segments, then an ACK."""
        if len(chunks) == 1:
            payload = memoryview(chunks[0]).cast("B")
        else:
            payload = memoryview(b"".join(chunks))
        if not payload:
            return
        for start in range(0, len(payload), MSS):
            segment = payload[start : start + MSS]
            self._segment(direction, PSH | ACK, segment, ts)
            self.seq[direction] = (self.seq[direction] + len(segment)) & 0xFFFF_FFFF
        self._segment(1 - direction, ACK, b"", ts)

    def close(self, ts: float) -> None:
        """FIN from the server, FIN-ACK from the client, then the server's last ACK."""
        if self.closed:
            return
        self.closed = True
        for direction in (SERVER, CLIENT):
            self._segment(direction, FIN | ACK, b"", ts)
            self.seq[direction] = (self.seq[direction] + 1) & 0xFFFF_FFFF
        self._segment(SERVER, ACK, b"", ts)

    # ------------------------------------------------------------------ private

    def _segment(
        self,
        direction: int,
        flags: int,
        payload: bytes | memoryview,
        ts: float,
        *,
        syn_options: bool = False,
    ) -> None:
        options = _SYN_OPTIONS.pack(2, 4, MSS, 1, 3, 3, WINDOW_SHIFT) if syn_options else b""
        tcp_length = 20 + len(options) + len(payload)
        ack = self.seq[1 - direction] if flags & ACK else 0
        # 0xFFFF: 64 KiB on the SYNs (never scaled, RFC 7323 §2.2), 1 GiB on the rest.
        window = 0xFFFF
        header = (
            _TCP.pack(
                self._ports[direction],
                self._ports[1 - direction],
                self.seq[direction],
                ack,
                (5 + len(options) // 4) << 4,
                flags,
                window,
                0,
                0,
            )
            + options
        )
        total = self._pseudo[direction] + tcp_length + ones_complement_sum(header)
        if payload:
            total += ones_complement_sum(payload)  # the header's length is even
        header = header[:16] + struct.pack("!H", checksum(total)) + header[18:]
        ip_total = 20 + tcp_length
        ip_header = _IPV4.pack(
            0x45,
            0,
            ip_total,
            self._ip_id[direction],
            0x4000,
            64,
            6,
            0,
            self._ips[direction],
            self._ips[1 - direction],
        )
        self._ip_id[direction] = (self._ip_id[direction] + 1) & 0xFFFF
        ip_header = (
            ip_header[:10]
            + struct.pack("!H", checksum(ones_complement_sum(ip_header)))
            + ip_header[12:]
        )
        frame_length = 14 + ip_total
        seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
        ethernet = _ETHERNET.pack(_MACS[1 - direction], _MACS[direction], 0x0800)
        self.file.write_record(
            _RECORD.pack(seconds, micros, frame_length, frame_length)
            + ethernet
            + ip_header
            + header,
            payload,
        )
        self.packets += 1
