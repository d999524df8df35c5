"""A minimal CBOR encoder/decoder for test payloads (maps, arrays, text,
unsigned and negative integers): enough to write what a lock sends and read the
gateway's answers, independent of the code under test."""

import struct


def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)
    raise ValueError("too large")


def encode(v):
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if v is None:
        return b"\xf6"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, str):
        b = v.encode()
        return _head(3, len(b)) + b
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(encode(k) + encode(x) for k, x in v.items())
    raise TypeError(type(v))


def decode(data):
    value, rest = _decode(data)
    if rest:
        raise ValueError("trailing bytes")
    return value


def decode_first(data):
    """The first item of `data` (a client that got a response twice, after
    retransmitting its request, writes both)."""
    return _decode(data)[0]


def _decode(d):
    major, info = d[0] >> 5, d[0] & 31
    d = d[1:]
    if info < 24:
        n = info
    else:
        size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n = int.from_bytes(d[:size], "big")
        d = d[size:]
    if major == 0:
        return n, d
    if major == 1:
        return -1 - n, d
    if major in (2, 3):
        raw = d[:n]
        return (raw if major == 2 else raw.decode()), d[n:]
    if major == 4:
        out = []
        for _ in range(n):
            x, d = _decode(d)
            out.append(x)
        return out, d
    if major == 5:
        out = {}
        for _ in range(n):
            k, d = _decode(d)
            x, d = _decode(d)
            out[k] = x
        return out, d
    if major == 7 and n in (20, 21, 22):
        return {20: False, 21: True, 22: None}[n], d
    raise ValueError(f"unsupported major type {major}")
