"""``tf.train.Example`` parsing without protobuf or TensorFlow.

Wire format (proto3)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   # each entry: key = 1 (string), value = 2 (Feature)
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }  # float32 little endian
    Int64List { repeated int64 value = 1 [packed]; }  # varints, negative values two's complement

:func:`parse_example` returns ``{key: value}`` with

- ``bytes_list``: ``np.ndarray`` uint8 ``[N]`` when every one of the ``N`` strings is exactly one byte (the
  DeepMind datasets store images and masks that way), otherwise ``list[bytes]``;
- ``float_list``: ``np.ndarray`` float32 ``[N]``;
- ``int64_list``: ``np.ndarray`` int64 ``[N]``;
- a feature with no kind set: ``None``.

Fast path: a BytesList of ``N`` one-byte strings is the byte triple ``0x0A 0x01 v`` repeated ``N`` times,
so it is read as an array of 3-byte structs, checked (every head must be ``0A 01``) and decoded in a
couple of vectorised passes (about 1 ms for CLEVR's 2.5 MB mask list) instead of ``N`` field reads.
Malformed input raises :class:`ExampleError`.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

__all__ = ["ExampleError", "as_uint8", "parse_example"]


class ExampleError(ValueError):
    """The bytes are not a valid serialized ``tf.train.Example``."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result, shift = b & 0x7F, 7
    pos += 1
    while True:
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ExampleError("varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int):
    """Yield ``(field, wire_type, value_start, value_end_or_int)`` for the fields in ``buf[start:end]``.

    For wire type 2 (length-delimited) the span ``[value_start, value_end)`` is yielded; for varints the
    decoded integer is in the last slot; fixed32/fixed64 give their span.
    """
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            stop = pos + length
            if stop > end:
                raise ExampleError(f"field {field} runs past the end of its message")
            yield field, wire, pos, stop
            pos = stop
        elif wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, pos, value
        elif wire == 5:
            yield field, wire, pos, pos + 4
            pos += 4
        elif wire == 1:
            yield field, wire, pos, pos + 8
            pos += 8
        else:
            raise ExampleError(f"unsupported wire type {wire} for field {field}")
    if pos != end:
        raise ExampleError("message ends inside a field")


# one element of a BytesList of one-byte strings: tag 0x0A and length 0x01 (read as the little-endian
# uint16 0x010A), then the value byte
_TRIPLE = np.dtype([("head", "<u2"), ("value", "u1")])


def _bytes_list(buf: bytes, start: int, end: int) -> np.ndarray | list[bytes]:
    size = end - start
    if size % 3 == 0 and size:
        triples = np.frombuffer(buf, dtype=_TRIPLE, count=size // 3, offset=start)
        if (triples["head"] == 0x010A).all():
            return np.ascontiguousarray(triples["value"])
    values: list[bytes] = []
    for field, wire, s, e in _fields(buf, start, end):
        if field == 1:
            if wire != 2:
                raise ExampleError("BytesList value is not length-delimited")
            values.append(buf[s:e])
    if all(len(v) == 1 for v in values):
        return np.frombuffer(b"".join(values), dtype=np.uint8)
    return values


def _float_list(buf: bytes, start: int, end: int) -> np.ndarray:
    pieces: list[np.ndarray] = []
    for field, wire, s, e in _fields(buf, start, end):
        if field != 1:
            continue
        if wire == 2:  # packed
            if (e - s) % 4:
                raise ExampleError("packed FloatList length is not a multiple of 4")
            pieces.append(np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s))
        elif wire == 5:
            pieces.append(np.frombuffer(buf, dtype="<f4", count=1, offset=s))
        else:
            raise ExampleError(f"FloatList value has wire type {wire}")
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces).astype(np.float32)


def _int64_list(buf: bytes, start: int, end: int) -> np.ndarray:
    values: list[int] = []
    for field, wire, s, e in _fields(buf, start, end):
        if field != 1:
            continue
        if wire == 2:  # packed varints
            chunk = buf[s:e]
            if max(chunk, default=0) < 0x80:  # all single-byte varints
                values.extend(chunk)
                continue
            pos = s
            while pos < e:
                v, pos = _varint(buf, pos)
                values.append(v)
            if pos != e:
                raise ExampleError("packed Int64List ends inside a varint")
        elif wire == 0:
            values.append(e)
        else:
            raise ExampleError(f"Int64List value has wire type {wire}")
    arr = np.array([v - (1 << 64) if v >= 1 << 63 else v for v in values], dtype=np.int64)
    return arr.reshape(-1)


def _feature(buf: bytes, start: int, end: int):
    value = None
    for field, wire, s, e in _fields(buf, start, end):
        if wire != 2:
            continue
        if field == 1:
            value = _bytes_list(buf, s, e)
        elif field == 2:
            value = _float_list(buf, s, e)
        elif field == 3:
            value = _int64_list(buf, s, e)
    return value


def parse_example(data: bytes | bytearray | memoryview, keys: Collection[str] | None = None) -> dict:
    """Parse a serialized ``tf.train.Example`` into ``{feature name: value}`` (see the module docstring).

    Args:
        data: the record payload.
        keys: parse only these features (others are skipped without decoding); ``None``: all.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    out: dict = {}
    try:
        for field, wire, s, e in _fields(buf, 0, len(buf)):
            if field != 1 or wire != 2:
                continue
            for f2, w2, s2, e2 in _fields(buf, s, e):
                if f2 != 1 or w2 != 2:
                    continue
                key = None
                span = None
                for f3, w3, s3, e3 in _fields(buf, s2, e2):
                    if f3 == 1 and w3 == 2:
                        key = buf[s3:e3].decode("utf-8")
                    elif f3 == 2 and w3 == 2:
                        span = (s3, e3)
                if key is None or (keys is not None and key not in keys):
                    continue
                out[key] = _feature(buf, *span) if span is not None else None
    except IndexError:
        raise ExampleError("truncated message") from None
    except UnicodeDecodeError:
        raise ExampleError("feature name is not UTF-8") from None
    return out


def as_uint8(value, key: str = "feature") -> np.ndarray:
    """A bytes feature as a flat uint8 array: one-byte strings, or a single raw string (CATER)."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes):
        return np.frombuffer(value[0], dtype=np.uint8)
    raise ExampleError(f"{key}: expected one-byte strings or a single byte string")
