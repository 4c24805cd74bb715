"""CRC32C and inflate backends for TFRecord reading (:mod:`scenedecomp.data.deepmind.tfrecord` does the framing).

Optional accelerators, used when importable (neither is required):

- CRC32C: the ``crc32c`` PyPI package or ``google-crc32c`` (hardware CRC); otherwise the
  built-in numpy implementation (the data is cut into a few thousand lanes that advance in
  parallel with 16-bit tables, and the lane CRCs are then merged with GF(2) shift operators).
  ``set_crc_backend`` / ``SCENEDECOMP_CRC32C=numpy|crc32c|google-crc32c`` force one.
- Inflate: ``zlib-ng`` or ``isal`` (faster than the standard library's zlib);
  otherwise :mod:`zlib`. ``set_inflate_backend`` / ``SCENEDECOMP_INFLATE=zlib|zlib-ng|isal`` force one.

Decompression dominates the cost of a CLEVR record (3.2 MB inflated), so with the standard library
alone reading is several times slower than with both accelerators (see ``benchmarks/tfrecord_read.py``).
"""

from __future__ import annotations

import os
import zlib

import numpy as np

__all__ = ["CRC_BACKENDS", "INFLATERS", "INFLATE_ERRORS", "crc32c", "crc32c_numpy", "crc32c_reference",
           "crc_backend", "inflate_backend", "inflater", "mask_crc", "set_crc_backend", "set_inflate_backend"]

_MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


# ---------------------------------------------------------------------------------------------------
# CRC32C
# ---------------------------------------------------------------------------------------------------


def _make_byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_byte_table()
_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # [256, 8]
_UNIT = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))  # basis vectors e_0..e_31


def crc32c_reference(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Bytewise CRC32C (slow; the definition used by the tests). ``value`` continues a running CRC."""
    reg = value ^ 0xFFFFFFFF
    table = _TABLE
    for b in memoryview(data).cast("B"):
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def _tables_from_columns(cols: np.ndarray) -> np.ndarray:
    """Byte tables ``[4, 256]`` of the GF(2)-linear map whose images of ``e_0..e_31`` are ``cols``."""
    cols = np.asarray(cols, dtype=np.uint32)
    out = np.empty((4, 256), dtype=np.uint32)
    for j in range(4):
        picked = np.where(_BITS, cols[None, 8 * j: 8 * j + 8], np.uint32(0))
        out[j] = np.bitwise_xor.reduce(picked, axis=1)
    return out


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply the linear map given by byte ``tables [4,256]`` to a uint32 array."""
    x = np.asarray(x, dtype=np.uint32)
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF]
            ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24])


class _ShiftOperators:
    """``S_k``: the CRC register map for appending ``k`` zero bytes (linear over GF(2)), cached."""

    def __init__(self) -> None:
        one = [_TABLE[e & 0xFF] ^ (e >> 8) for e in (1 << i for i in range(32))]
        self._cache: dict[int, np.ndarray] = {1: _tables_from_columns(np.array(one, dtype=np.uint32))}
        self._pow2: list[np.ndarray] = [self._cache[1]]  # S_{2^i}
        self._wide: tuple[np.ndarray, np.ndarray] | None = None

    def _compose(self, outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
        return _tables_from_columns(_apply(outer, _apply(inner, _UNIT)))

    def get(self, k: int) -> np.ndarray:
        op = self._cache.get(k)
        if op is not None:
            return op
        while (1 << len(self._pow2)) <= k:
            self._pow2.append(self._compose(self._pow2[-1], self._pow2[-1]))
        result = None
        for i in range(k.bit_length()):
            if k >> i & 1:
                result = self._pow2[i] if result is None else self._compose(self._pow2[i], result)
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[k] = result
        return result

    def wide(self) -> tuple[np.ndarray, np.ndarray]:
        """16-bit tables ``(TA, TB)`` of ``S_4``: ``S_4(x) = TA[x & 0xFFFF] ^ TB[x >> 16]``."""
        if self._wide is None:
            s4 = self.get(4)
            v = np.arange(65536)
            self._wide = (s4[0][v & 0xFF] ^ s4[1][v >> 8], s4[2][v & 0xFF] ^ s4[3][v >> 8])
        return self._wide


_OPS = _ShiftOperators()


def crc32c_numpy(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of ``data`` with numpy (no compiled extension). ``value`` continues a running CRC.

    The first ``L*m`` bytes are split into ``L`` lanes of ``m`` bytes. All lanes advance together, 4 bytes
    per step (``reg = S_4(reg ^ word)`` via two 65536-entry tables); lane results are then merged pairwise,
    ``crc(A|B) = S_|B|(crc(A)) ^ crc(B)``, and the last ``< m`` bytes go through the bytewise loop.
    """
    view = memoryview(data).cast("B")
    n = len(view)
    reg = value ^ 0xFFFFFFFF
    start = 0
    m = 64 if n >= 64 * 256 else 16
    lanes = n // m
    if n >= 512 and lanes >= 2:
        words = np.frombuffer(view, dtype=np.uint8, count=lanes * m).view("<u4").reshape(lanes, m // 4)
        ta, tb = _OPS.wide()
        state = np.zeros(lanes, dtype=np.uint32)
        state[0] = reg
        x = np.empty(lanes, dtype=np.uint32)
        lo = np.empty(lanes, dtype=np.intp)
        hi = np.empty(lanes, dtype=np.intp)
        tmp = np.empty(lanes, dtype=np.uint32)
        for j in range(m // 4):
            np.bitwise_xor(state, words[:, j], out=x)
            np.bitwise_and(x, 0xFFFF, out=lo, casting="unsafe")
            np.right_shift(x, 16, out=hi, casting="unsafe")
            np.take(ta, lo, out=state)
            np.take(tb, hi, out=tmp)
            np.bitwise_xor(state, tmp, out=state)
        values, span = state, m
        while len(values) > 1:
            if len(values) & 1:  # a leading all-zero lane contributes nothing
                values = np.concatenate([np.zeros(1, dtype=np.uint32), values])
            values = _apply(_OPS.get(span), values[0::2]) ^ values[1::2]
            span *= 2
        reg = int(values[0])
        start = lanes * m
    table = _TABLE
    for b in view[start:]:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def _load_backends() -> dict[str, object]:
    backends: dict[str, object] = {}
    try:
        import crc32c as _crc32c_pkg  # type: ignore[import-not-found]

        backends["crc32c"] = lambda data, value=0: _crc32c_pkg.crc32c(data, value)
    except Exception:  # noqa: BLE001 - absent or broken optional dependency
        pass
    try:
        import google_crc32c as _google  # type: ignore[import-not-found]

        if getattr(_google, "implementation", "c") == "c":
            backends["google-crc32c"] = lambda data, value=0: _google.extend(value, bytes(data))
    except Exception:  # noqa: BLE001
        pass
    backends["numpy"] = crc32c_numpy
    return backends


CRC_BACKENDS = _load_backends()
_forced = os.environ.get("SCENEDECOMP_CRC32C")
_BACKEND_NAME = _forced if _forced in CRC_BACKENDS else next(iter(CRC_BACKENDS))
_crc_impl = CRC_BACKENDS[_BACKEND_NAME]


def crc_backend() -> str:
    """Name of the CRC32C implementation in use: ``crc32c``, ``google-crc32c`` or ``numpy``."""
    return _BACKEND_NAME


def set_crc_backend(name: str) -> str:
    """Use CRC32C implementation ``name`` (``crc32c``, ``google-crc32c``, ``numpy``); returns the old one."""
    global _BACKEND_NAME, _crc_impl
    if name not in CRC_BACKENDS:
        raise ValueError(f"CRC32C backend {name!r} is not available; available: {', '.join(CRC_BACKENDS)}")
    old, _BACKEND_NAME, _crc_impl = _BACKEND_NAME, name, CRC_BACKENDS[name]
    return old


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``value``; result in ``[0, 2**32)``."""
    if len(data) <= 64:
        return crc32c_reference(data, value)
    return _crc_impl(data, value)  # type: ignore[operator]


def mask_crc(crc: int) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add ``0xA282EAD8`` (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _load_inflaters() -> dict[str, object]:
    inflaters: dict[str, object] = {}
    try:
        from zlib_ng import zlib_ng  # type: ignore[import-not-found]

        inflaters["zlib-ng"] = zlib_ng
    except Exception:  # noqa: BLE001 - absent or broken optional dependency
        pass
    try:
        from isal import isal_zlib  # type: ignore[import-not-found]

        inflaters["isal"] = isal_zlib
    except Exception:  # noqa: BLE001
        pass
    inflaters["zlib"] = zlib
    return inflaters


INFLATERS = _load_inflaters()
INFLATE_ERRORS = tuple({zlib.error, *(getattr(m, "error", zlib.error) for m in INFLATERS.values())})
_forced = os.environ.get("SCENEDECOMP_INFLATE")
_INFLATE_NAME = _forced if _forced in INFLATERS else next(iter(INFLATERS))


def inflate_backend() -> str:
    """Name of the inflate implementation in use: ``zlib-ng``, ``isal`` or ``zlib``."""
    return _INFLATE_NAME


def set_inflate_backend(name: str) -> str:
    """Use inflate implementation ``name`` (``zlib``, ``zlib-ng``, ``isal``); returns the old one."""
    global _INFLATE_NAME
    if name not in INFLATERS:
        raise ValueError(f"inflate backend {name!r} is not available; available: {', '.join(INFLATERS)}")
    old, _INFLATE_NAME = _INFLATE_NAME, name
    return old


def inflater():
    """The inflate module in use (``zlib``'s interface: ``decompressobj(wbits)``)."""
    return INFLATERS[_INFLATE_NAME]
