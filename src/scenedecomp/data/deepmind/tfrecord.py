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

CRC32C and inflate come from :mod:`scenedecomp.data.deepmind.tfrecord_backends` (hardware CRC32C and ISA-L /
zlib-ng inflate when importable, portable fallbacks otherwise).

"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ..registry import DatasetError
from .tfrecord_backends import INFLATE_ERRORS, crc32c, inflater, mask_crc

__all__ = ["COMPRESSIONS", "TFRecordReader", "detect_compression", "iter_records"]

COMPRESSIONS = ("auto", "gzip", "zlib", "none")
_READ_CHUNK = 1 << 18  # compressed bytes read at a time
_MAX_INFLATE = 1 << 23  # decompressed bytes produced per decompress call (bounds memory)
_MAX_RECORD = 1 << 31  # refuse records of 2 GiB or more (a corrupt length read without CRC checks)


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
        self.module = inflater()
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
        """Queue more decompressed bytes (or set ``eof``). Raises ``INFLATE_ERRORS``."""
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
        except INFLATE_ERRORS as err:
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
        except INFLATE_ERRORS as err:
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
