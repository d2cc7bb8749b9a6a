"""A slow, obviously-structured pure-Python QUIC decoder: the test oracle for our encoder.

It follows the decoder side of spice-common (``quic_decode_begin``, ``quic_decode``,
quic_tmpl.c ``uncompress_row0_seg``/``uncompress_row_seg``, quic.c ``decode_state_run``,
quic_family_tmpl.c ``golomb_decoding``) and is written independently of ``encoders.quic`` (it
shares no code or tables with it), so an encoder bug cannot cancel out in a round trip.  It
decodes RGB32 and RGBA streams into (H, W, 4) B,G,R,X/A arrays (X = 0, as the client writes it).
Meant for small images: it runs at a few thousand pixels per second.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QuicDecodeError", "quic_decode"]

_MAGIC = 0x43495551
_RGB32, _RGBA = 4, 5
_LIMIT = 26
_WMIMAX, _WMINEXT = 6, 2048
_TRIGGERS = (110, 550, 900, 800, 550, 400, 350, 250, 140, 160, 140)
_J = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
      14, 15)  # fmt: skip


def _chaos() -> list[int]:
    # The tabrand_chaos table, regenerated from its hex text rather than imported from the encoder.
    text = """
    02c57542 35427717 2f5a2153 9244f155 7bd26d07 354c6052 57329b28 2993868e 6cd8808c 147b46e0
    99db66af e32b4cac 1b671264 9d433486 62a4c192 06089a4b 9e3dce44 daabee13 222425ea a46f331d
    cd589250 8bb81d7f c8b736b9 35948d33 d7ac7fd0 5fbe2803 2cfbc105 013dbc4e 7a37820f 39f88e9e
    edd58794 c5076689 fcada5a4 64c2f46d b3ba3243 8974b4f9 5a05aebd 20afcd00 39e2b008 88a18a45
    600bde29 f3971ace f37b0a6b 7041495b 70b707ab 06beffbb 4206051f e13c4ee3 c1a78327 91aa067c
    8295f72a 732917a6 1d871b4d 4048f136 f1840e7e 6a6048c1 696cb71a 7ff501c3 0fc6310b 57e0f83d
    8cc26e74 11a525a2 946934c7 7cd888f0 8f9d8604 4f86e73b 04520316 deeea20c f1def496 67687288
    f540c5b2 22401484 3478658a c2385746 01979c2c 5dad73c8 0321f58b f0fedbee 92826ddf 284bec73
    5b1a1975 03df1e11 20963e01 a17cf12b 740d776e a7a6bf3c 01b5cce4 1118aa76 fc6fac0a ce927e9b
    00bf2567 806f216c bca69056 795bd3e9 c9dc4557 8929b6c2 789d52ec 3f3fbf40 b9197368 a38c15b5
    c3b44fa8 ca8333b0 b7e8d590 be807feb bf5f8360 d99e2f5c 372928e1 7c757c4c 0db5b154 c01ede02
    1fc86e78 1f3985be b4805c77 00c880fa 974c1b12 35ab0214 b2dc840d 5b00ae37 d313b026 b260969d
    7f4c8879 1734c4d3 49068631 b9f6a021 6b863e6f cee5debf 29f8c9fb 53dd6880 72b61223 1f67a9fd
    0a0f6993 13e59119 11cca12e fe6b6766 16b6effc 97918fc4 c2b8a563 94f2f741 0bfa8c9a d1537ae8
    c1da349c 873c60ca 95005b85 9b5c080e bc8abbd9 e1eab1d2 6dac9070 4ea9ebf1 e0cf30d4 1ef5bd7b
    d161043e 5d2fa2e2 ff5d3cae 86ed9f87 2aa1daa1 bd731a34 9e8f4b22 b1c2c67a c21758c9 a182215d
    ccb01948 8d168df7 04238cfe 368c3dbc 0aeadca5 bad21c24 0a71fee5 9fc5d872 54c152c6 fc329483
    6783384a eddb3e1c 65f90e30 884ad098 ce81675a 4b372f7d 68bf9a39 43445f1e 40f8d8cb 90d5acb6
    4cd07282 349eeb06 0c9d5332 520b24ef 80020447 67976491 2f931ca3 fe9b0535 fcd30220 61a9e6cc
    a487d8d7 3f7c5dd1 7d0127c5 48f51d15 60dea871 c9a91cb7 58b53bb3 9d5e0b2d 624a78b4 30dbee1b
    9bdf22e7 1df5c299 2d5643a7 f4dd35ff 03ca8fd6 53b47ed8 6f2c19aa feb0c1f4 49e54438 2f2577e6
    bf876969 72440ea9 fa0bafb8 74f5b3a0 7dd357cd 89ce1358 6ef2cdda 1e7767f3 a6be9fdb 4f5f88f8
    ba994a3a 08ca6b65 e0893818 9e00a16a f42bfc8f 9972eedc 749c8b51 32c05f5e d706805f 6bfbb7cf
    d9210a10 31a1db97 923a9559 37a7a1f6 059f8861 ca493e62 65157e81 8f6467dd ab85ff9f 9331aff2
    8616b9f5 edbd5695 ee7e29b1 313ac44f b903112f 432ef649 dc0a36c0 61cf2bba 81474925 a8b6c7ad
    ee5931de b2f8158d 59fb7409 2e3dfaed 9af25a3f e1fed4d5
    """
    return [int(w, 16) for w in text.split()]


_CHAOS = _chaos()


class QuicDecodeError(ValueError):
    """The stream is not a well-formed RGB32/RGBA QUIC image."""


class _Bits:
    """MSB-first reader over little-endian 32-bit words."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise QuicDecodeError("QUIC data is not a whole number of words")
        self.words = [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
        self.bitpos = 0

    def peek(self, n: int) -> int:
        """The next n bits as an int, without consuming them (zeros past the end)."""
        w, b = divmod(self.bitpos, 32)
        chunk = 0
        for k in range(3):
            chunk = (chunk << 32) | (self.words[w + k] if w + k < len(self.words) else 0)
        return (chunk >> (96 - b - n)) & ((1 << n) - 1)

    def read(self, n: int) -> int:
        if n == 0:
            return 0
        v = self.peek(n)
        self.bitpos += n
        if self.bitpos > 32 * len(self.words):
            raise QuicDecodeError("truncated QUIC stream")
        return v


class _State:
    """CommonState of one plane."""

    def __init__(self) -> None:
        self.waitcnt = 0
        self.seed = 0xFF
        self.wmidx = 0
        self.wmileft = _WMINEXT
        self.melcstate = 0

    def rand(self) -> int:
        self.seed += 1
        return _CHAOS[self.seed & 0xFF]

    @property
    def trigger(self) -> int:
        return _TRIGGERS[min(self.wmidx, 10)]


class _Channel:
    """Model of one component: 8 buckets of 8 counters and a bestcode each."""

    def __init__(self, width: int) -> None:
        self.counters = [[0] * 8 for _ in range(8)]
        self.bestcode = [7] * 8
        self.corr = [0] * (width + 1)  # corr[i + 1] = correlate_row[i]

    @staticmethod
    def bucket(ctx: int) -> int:
        # {0}, {1,2}, {3..6}, {7..14}, ... , {127..255}
        return min((ctx + 1).bit_length() - 1, 7)


def _grcodewords(l_: int) -> int:
    return min(_LIMIT - 8, (1 << (8 - l_)) - 1) << l_


def _code_len(n: int, l_: int) -> int:
    ngr = _grcodewords(l_)
    if n < ngr:
        return (n >> l_) + l_ + 1
    prefix = ngr >> l_
    return prefix + max(0, (256 - ngr - 1).bit_length())


def _golomb_decode(bits: _Bits, l_: int) -> int:
    ngr = _grcodewords(l_)
    prefix = ngr >> l_
    zeros = 0
    while zeros < prefix and bits.peek(zeros + 1) == 0:
        zeros += 1
    if zeros < prefix:  # plain Golomb-Rice codeword: zeros, a 1, l low bits
        bits.read(zeros + 1)
        return (zeros << l_) | bits.read(l_)
    bits.read(prefix)
    return ngr + bits.read(max(0, (256 - ngr - 1).bit_length()))


def _update(ch: _Channel, st: _State, ctx: int, val: int) -> None:
    b = _Channel.bucket(ctx)
    cnt = ch.counters[b]
    for k in range(8):
        cnt[k] += _code_len(val, k)
    best = 7
    for k in range(6, -1, -1):
        if cnt[k] < cnt[best]:
            best = k
    ch.bestcode[b] = best
    if cnt[best] > st.trigger:
        ch.counters[b] = [c >> 1 for c in cnt]


def _unmap(m: int) -> int:
    return 255 - (m >> 1) if m & 1 else m >> 1


def _decode_run(bits: _Bits, st: _State) -> int:
    run = 0
    while bits.read(1):
        run += 1 << _J[st.melcstate]
        if st.melcstate < 31:
            st.melcstate += 1
    run += bits.read(_J[st.melcstate])
    if st.melcstate:
        st.melcstate -= 1
    return run


def _decode_plane_row(
    bits: _Bits,
    st: _State,
    chans: list[_Channel],
    comps: list[int],
    img: np.ndarray,
    y: int,
) -> None:
    """Decode one row of the components ``comps`` (byte indices in a pixel) of ``img``."""
    width = img.shape[1]
    cur, prev = img[y], img[y - 1] if y else None

    def same(row: np.ndarray, i: int, j: int) -> bool:
        return all(row[i, c] == row[j, c] for c in comps)

    def decode_pixel(i: int) -> None:
        for ch, c in zip(chans, comps, strict=True):
            m = _golomb_decode(bits, ch.bestcode[_Channel.bucket(ch.corr[i])])
            ch.corr[i + 1] = m
            if prev is None:
                pred = int(cur[i - 1, c]) if i else 0
            else:
                pred = (int(cur[i - 1, c]) + int(prev[i, c])) >> 1 if i else int(prev[i, c])
            cur[i, c] = (_unmap(m) + pred) & 0xFF

    def segment(i: int, end: int, waitmask: int) -> None:
        if i == 0:
            decode_pixel(0)
            if st.waitcnt:
                st.waitcnt -= 1
            else:
                st.waitcnt = st.rand() & waitmask
                for ch in chans:
                    _update(ch, st, ch.corr[0], ch.corr[1])
            i = 1
        stopidx = i + st.waitcnt
        run_index = 0
        while True:
            while i < end:
                if (
                    prev is not None
                    and same(prev, i - 1, i)
                    and i != run_index
                    and i > 2
                    and same(cur, i - 1, i - 2)
                ):
                    break
                decode_pixel(i)
                if i == stopidx:
                    for ch in chans:
                        _update(ch, st, ch.corr[i], ch.corr[i + 1])
                    stopidx = i + 1 + (st.rand() & waitmask)
                i += 1
            else:
                st.waitcnt = stopidx - end
                return
            run_index = i
            st.waitcnt = stopidx - i
            run = _decode_run(bits, st)
            if run > end - i:
                raise QuicDecodeError("run past the end of the segment")
            for _ in range(run):
                for c in comps:
                    cur[i, c] = cur[i - 1, c]
                i += 1
            if i == end:
                return
            stopidx = i + st.waitcnt

    pos, left = 0, width
    while st.wmidx < _WMIMAX and st.wmileft <= left:
        segment(pos, pos + st.wmileft, (1 << st.wmidx) - 1)
        left -= st.wmileft
        pos += st.wmileft
        st.wmidx += 1
        st.wmileft = _WMINEXT
    if left:
        segment(pos, pos + left, (1 << st.wmidx) - 1)
        if st.wmidx < _WMIMAX:
            st.wmileft -= left


def quic_decode(data: bytes) -> tuple[int, np.ndarray]:
    """Decode a QUIC stream; return (image type, (H, W, 4) uint8 B,G,R,X/A array)."""
    bits = _Bits(data)
    if len(bits.words) < 6:
        raise QuicDecodeError("QUIC stream shorter than its header")
    magic, version, qtype, width, height = (bits.read(32) for _ in range(5))
    if magic != _MAGIC or version != 0:
        raise QuicDecodeError("bad QUIC magic or version")
    if qtype not in (_RGB32, _RGBA):
        raise QuicDecodeError(f"unsupported QUIC image type {qtype}")
    if width <= 0 or height <= 0:
        raise QuicDecodeError("invalid size")
    img = np.zeros((height, width, 4), dtype=np.uint8)
    chans = [_Channel(width) for _ in range(4)]
    rgb_state, alpha_state = _State(), _State()
    for y in range(height):
        for ch in chans:
            ch.corr[0] = ch.corr[1] if y else 0
        _decode_plane_row(bits, rgb_state, chans[:3], [2, 1, 0], img, y)
        if qtype == _RGBA:
            _decode_plane_row(bits, alpha_state, chans[3:], [3], img, y)
    # The C decoder reads one word ahead: a conforming stream holds the padded last word and
    # exactly one more word.
    used_words = (bits.bitpos + 31) // 32
    if len(bits.words) != used_words + 1:
        raise QuicDecodeError(
            f"stream has {len(bits.words)} words, expected {used_words + 1} (padding + one)"
        )
    return qtype, img
