"""TFRecord reading without TensorFlow: streaming GZIP/ZLIB decompression, framing, masked CRC32C.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (LE) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8 (mod 2**32)``. The whole stream may be
compressed as one GZIP (DeepMind's multi-object datasets) or ZLIB (CATER) stream. Decompression is
streamed in bounded chunks: a file is never loaded whole, and memory stays at about one record plus one
chunk.

Every problem -- a CRC mismatch, a truncated file, corrupt compressed data, an absurd length -- raises
:class:`scenedecomp.data.DatasetError` with one line naming the file and the record index (0-based), so
a damaged file never yields garbage arrays. (An *uncompressed* file cut exactly between two records cannot
be told from a shorter file -- the format has no end marker; GZIP and ZLIB streams do, so there a
truncation is always reported.)

Optional accelerators, used when importable (neither is required):

- CRC32C: the ``crc32c`` PyPI package or ``google-crc32c`` (hardware CRC, ~20 GB/s); otherwise the
  built-in numpy implementation (~0.7 GB/s: the data is cut into a few thousand lanes that advance in
  parallel with 16-bit tables, and the lane CRCs are then merged with GF(2) shift operators).
  ``set_crc_backend`` / ``SCENEDECOMP_CRC32C=numpy|crc32c|google-crc32c`` force one.
- Inflate: ``zlib-ng`` or ``isal`` (3-10x faster than the standard library's zlib on these files);
  otherwise :mod:`zlib`. ``set_inflate_backend`` / ``SCENEDECOMP_INFLATE=zlib|zlib-ng|isal`` force one.

Decompression dominates the cost of a CLEVR record (3.2 MB inflated), so with the standard library
alone reading is several times slower than with both accelerators (see ``benchmarks/tfrecord_read.py``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .registry import DatasetError

__all__ = [
    "COMPRESSIONS",
    "TFRecordReader",
    "crc32c",
    "crc32c_numpy",
    "crc32c_reference",
    "crc_backend",
    "detect_compression",
    "inflate_backend",
    "iter_records",
    "mask_crc",
    "set_crc_backend",
    "set_inflate_backend",
]

COMPRESSIONS = ("auto", "gzip", "zlib", "none")
_MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_READ_CHUNK = 1 << 18  # compressed bytes read at a time
_MAX_INFLATE = 1 << 23  # decompressed bytes produced per decompress call (bounds memory)
_MAX_RECORD = 1 << 31  # refuse records of 2 GiB or more (a corrupt length read without CRC checks)


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


_BACKENDS = _load_backends()
_forced = os.environ.get("SCENEDECOMP_CRC32C")
_BACKEND_NAME = _forced if _forced in _BACKENDS else next(iter(_BACKENDS))
_crc_impl = _BACKENDS[_BACKEND_NAME]


def crc_backend() -> str:
    """Name of the CRC32C implementation in use: ``crc32c``, ``google-crc32c`` or ``numpy``."""
    return _BACKEND_NAME


def set_crc_backend(name: str) -> str:
    """Use CRC32C implementation ``name`` (``crc32c``, ``google-crc32c``, ``numpy``); returns the old one."""
    global _BACKEND_NAME, _crc_impl
    if name not in _BACKENDS:
        raise ValueError(f"CRC32C backend {name!r} is not available; available: {', '.join(_BACKENDS)}")
    old, _BACKEND_NAME, _crc_impl = _BACKEND_NAME, name, _BACKENDS[name]
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


_INFLATERS = _load_inflaters()
_INFLATE_ERRORS = tuple({zlib.error, *(getattr(m, "error", zlib.error) for m in _INFLATERS.values())})
_forced = os.environ.get("SCENEDECOMP_INFLATE")
_INFLATE_NAME = _forced if _forced in _INFLATERS else next(iter(_INFLATERS))


def inflate_backend() -> str:
    """Name of the inflate implementation in use: ``zlib-ng``, ``isal`` or ``zlib``."""
    return _INFLATE_NAME


def set_inflate_backend(name: str) -> str:
    """Use inflate implementation ``name`` (``zlib``, ``zlib-ng``, ``isal``); returns the old one."""
    global _INFLATE_NAME
    if name not in _INFLATERS:
        raise ValueError(f"inflate backend {name!r} is not available; available: {', '.join(_INFLATERS)}")
    old, _INFLATE_NAME = _INFLATE_NAME, name
    return old


# ---------------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------------


def detect_compression(path: str | os.PathLike) -> str:
    """Guess the compression of a TFRecord file from its first bytes: ``gzip``, ``zlib`` or ``none``.

    An uncompressed file starts with a record header whose length CRC checks out; GZIP starts with
    ``1f 8b``; ZLIB with a CMF/FLG pair (deflate method, ``(CMF*256+FLG) % 31 == 0``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(head) == 0:
        return "none"
    if len(head) == 12 and mask_crc(crc32c(head[:8])) == struct.unpack("<I", head[8:])[0]:
        return "none"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    raise DatasetError(f"{path}: not a TFRecord file (neither GZIP, ZLIB nor an uncompressed record header)")


class _Source:
    """Byte source over a file, optionally inflating a GZIP/ZLIB stream in bounded chunks."""

    def __init__(self, path: Path, compression: str):
        self.path = path
        self.fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.compression = compression
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "zlib": zlib.MAX_WBITS}.get(compression)
        self.wbits = wbits
        self.module = _INFLATERS[_INFLATE_NAME]
        self.inflater = self.module.decompressobj(wbits) if wbits is not None else None
        self.pending = b""  # compressed input not yet fed to the inflater
        self.chunks: deque[bytes] = deque()  # decompressed bytes not yet returned
        self.offset = 0  # bytes of chunks[0] already returned
        self.available = 0  # bytes in chunks minus offset
        self.eof = False  # no more decompressed bytes will come
        self.error: str | None = None  # problem found at the end of the stream (reported lazily)

    def close(self) -> None:
        self.fh.close()

    def _push(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.available += len(chunk)

    def _fill(self, want: int = 0) -> None:
        """Queue more decompressed bytes (or set ``eof``). Raises ``_INFLATE_ERRORS``."""
        if self.inflater is None:
            chunk = self.fh.read(max(_READ_CHUNK, want))
            if chunk:
                self._push(chunk)
            else:
                self.eof = True
            return
        while not self.eof:
            inflater = self.inflater
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            else:
                data = self.pending or self.fh.read(_READ_CHUNK)
                self.pending = b""
            if not data:
                self.error = f"truncated {self.compression.upper()} stream"
                self.eof = True
                return
            out = inflater.decompress(data, max(_MAX_INFLATE, want))
            if inflater.eof:
                self._next_member(inflater.unused_data)
            if out:
                self._push(out)
                return

    def _next_member(self, rest: bytes) -> None:
        """At the end of a compressed stream: start the next GZIP member, or finish (checking the tail)."""
        while True:
            rest = rest.lstrip(b"\x00")  # zero padding after a stream is tolerated
            if rest:
                break
            rest = self.fh.read(_READ_CHUNK)
            if not rest:
                self.eof = True
                return
        if self.compression == "gzip" and rest[:2] == b"\x1f\x8b":  # concatenated members: one stream
            self.pending = rest
            self.inflater = self.module.decompressobj(self.wbits)
        else:
            self.error = f"unexpected data after the end of the {self.compression.upper()} stream"
            self.eof = True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the stream (copied once)."""
        while self.available < n and not self.eof:
            self._fill(n - self.available)
        need = min(n, self.available)
        self.available -= need
        pieces = []
        chunks = self.chunks
        while need:
            chunk, off = chunks[0], self.offset
            left = len(chunk) - off
            if left <= need:
                pieces.append(memoryview(chunk)[off:] if off else chunk)
                chunks.popleft()
                self.offset = 0
                need -= left
            else:
                pieces.append(memoryview(chunk)[off: off + need])
                self.offset = off + need
                need = 0
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)

    def at_end(self) -> bool:
        while self.available == 0 and not self.eof:
            self._fill()
        return self.available == 0 and self.eof


class TFRecordReader:
    """Iterate the records of one TFRecord file, verifying framing and CRCs.

    Args:
        path: the file.
        compression: ``auto`` (detect from the first bytes), ``gzip``, ``zlib`` or ``none``.
        verify: check both masked CRCs of every record (default). Without it, only the framing is checked.

    Iterating yields each record's payload as ``bytes``. ``index`` is the index of the next record.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, compression: str = "auto", verify: bool = True):
        self.path = Path(path)
        if compression not in COMPRESSIONS:
            raise DatasetError(f"{self.path}: unknown compression {compression!r}; expected one of "
                               f"{', '.join(COMPRESSIONS)}")
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file")
        if compression == "auto":
            compression = detect_compression(self.path)
        self.compression = compression
        self.verify = verify
        self.index = 0
        try:
            self._src = _Source(self.path, compression)
        except OSError as err:
            raise DatasetError(f"{self.path}: cannot open ({err.strerror or err})") from None

    def __enter__(self) -> TFRecordReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._src.close()

    def _fail(self, problem: str) -> DatasetError:
        return DatasetError(f"{self.path}: record {self.index}: {problem}")

    def _read(self, n: int, what: str) -> bytes:
        try:
            data = self._src.read(n)
        except _INFLATE_ERRORS as err:
            raise self._fail(f"corrupt {self.compression.upper()} data ({err})") from None
        if len(data) < n:
            extra = f" ({self._src.error})" if self._src.error else ""
            raise self._fail(f"file is truncated: {what} has {len(data)} of {n} bytes{extra}")
        return data

    def read_record(self) -> bytes | None:
        """The next record's payload, or ``None`` at a clean end of file."""
        try:
            if self._src.at_end():
                if self._src.error:
                    raise self._fail(self._src.error)
                return None
        except _INFLATE_ERRORS as err:
            raise self._fail(f"corrupt {self.compression.upper()} data ({err})") from None
        header = self._read(12, "the record header")
        length, length_crc = struct.unpack("<QI", header)
        if self.verify and mask_crc(crc32c(header[:8])) != length_crc:
            raise self._fail("length CRC mismatch (corrupt record header)")
        if length >= _MAX_RECORD:
            raise self._fail(f"implausible record length {length} (corrupt record header)")
        data = self._read(length, "the record data")
        footer = self._read(4, "the data CRC")
        if self.verify and mask_crc(crc32c(data)) != struct.unpack("<I", footer)[0]:
            raise self._fail("data CRC mismatch (corrupt record)")
        self.index += 1
        return data

    def skip(self, count: int) -> int:
        """Skip up to ``count`` records (framing checked, CRCs not); returns how many were skipped."""
        verify, self.verify = self.verify, False
        try:
            done = 0
            while done < count and self.read_record() is not None:
                done += 1
            return done
        finally:
            self.verify = verify

    def __iter__(self) -> Iterator[bytes]:
        while True:
            record = self.read_record()
            if record is None:
                return
            yield record


def iter_records(path: str | os.PathLike, compression: str = "auto", verify: bool = True,
                 limit: int | None = None) -> Iterator[bytes]:
    """Yield the payloads of the records in ``path`` (at most ``limit``); the file is closed at the end."""
    with TFRecordReader(path, compression=compression, verify=verify) as reader:
        for i, record in enumerate(reader):
            if limit is not None and i >= limit:
                return
            yield record
