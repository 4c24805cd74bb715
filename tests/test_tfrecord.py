"""TFRecord framing, CRC32C, tf.train.Example parsing and the multi-object schemas."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import pytest
from tfrecord_writer import (
    LAYOUTS,
    bytes_feature,
    example,
    float_feature,
    frame,
    int64_feature,
    make_cater_record,
    make_scene,
    one_byte_strings,
    slow_crc32c,
    write_tfrecord,
)

from scenedecomp.data import DatasetError
from scenedecomp.data.deepmind import tfrecord as tfr
from scenedecomp.data.deepmind import tfrecord_backends as backends
from scenedecomp.data.deepmind.example_proto import ExampleError, parse_example
from scenedecomp.data.deepmind.multi_object import SCHEMAS, decode_record, get_schema, label_map


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- CRC32C ---------------------------------------------------------------------------------------------


def test_crc32c_check_value():
    assert slow_crc32c(b"123456789") == 0xE3069283
    assert backends.crc32c_reference(b"123456789") == 0xE3069283
    assert backends.crc32c_numpy(b"123456789") == 0xE3069283
    assert backends.crc32c(b"123456789") == 0xE3069283
    assert backends.crc32c(b"") == 0


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 511, 512, 513, 1000, 4099, 16384, 16385, 70001])
def test_crc32c_numpy_matches_bytewise(n, rng):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    expected = slow_crc32c(data)
    assert backends.crc32c_numpy(data) == expected
    assert backends.crc32c(data) == expected
    # continuing a running CRC
    cut = n // 3
    assert backends.crc32c_numpy(data[cut:], backends.crc32c_numpy(data[:cut])) == expected


def test_every_available_backend_agrees(rng):
    data = rng.integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    expected = backends.crc32c_numpy(data)
    old = backends.crc_backend()
    try:
        for name in backends.CRC_BACKENDS:
            backends.set_crc_backend(name)
            assert backends.crc32c(data) == expected, name
    finally:
        backends.set_crc_backend(old)
    with pytest.raises(ValueError):
        backends.set_crc_backend("nope")


def test_mask_crc():
    crc = 0x12345678
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert backends.mask_crc(crc) == (rotated + 0xA282EAD8) % 2**32


# --- Example protos -------------------------------------------------------------------------------------


def test_parse_example_all_kinds():
    values = np.array([3, 0, 255, 7], dtype=np.uint8)
    feats = {
        "one_byte": one_byte_strings(values),
        "strings": bytes_feature([b"ab", b"", b"xyz"]),
        "raw": bytes_feature([b"\x01\x02\x03"]),
        "floats": float_feature([1.5, -2.0, 3.25]),
        "floats_unpacked": float_feature([0.5, 7.0], packed=False),
        "ints": int64_feature([0, 1, 127, 128, 300, -1, -(2**63), 2**63 - 1]),
        "ints_unpacked": int64_feature([5, -5], packed=False),
        "empty": bytes_feature([]),
    }
    out = parse_example(example(feats))
    assert out["one_byte"].dtype == np.uint8 and np.array_equal(out["one_byte"], values)
    assert out["strings"] == [b"ab", b"", b"xyz"]
    assert out["raw"] == [b"\x01\x02\x03"]
    assert out["floats"].dtype == np.float32 and np.array_equal(out["floats"], [1.5, -2.0, 3.25])
    assert np.array_equal(out["floats_unpacked"], [0.5, 7.0])
    assert out["ints"].dtype == np.int64
    assert out["ints"].tolist() == [0, 1, 127, 128, 300, -1, -(2**63), 2**63 - 1]
    assert out["ints_unpacked"].tolist() == [5, -5]
    assert out["empty"].size == 0
    assert set(parse_example(example(feats), keys={"floats"})) == {"floats"}


def test_fast_path_does_not_accept_lookalikes():
    # a list of 2-byte strings whose total length is a multiple of 3 must not be read as one-byte strings
    feat = bytes_feature([b"\x0a\x01", b"\x0a\x01", b"\x0a\x01"])  # 4 bytes each: 0A 02 0A 01
    out = parse_example(example({"k": feat}))
    assert out["k"] == [b"\x0a\x01"] * 3
    mixed = bytes_feature([b"a", b"bc", b"d"])  # 3 + 4 + 3 = 10 bytes
    assert parse_example(example({"k": mixed}))["k"] == [b"a", b"bc", b"d"]


@pytest.mark.parametrize("cut", [1, 5, 17])
def test_truncated_example_raises(cut):
    data = example({"x": float_feature([1.0, 2.0]), "m": one_byte_strings(np.arange(10, dtype=np.uint8))})
    with pytest.raises(ExampleError):
        parse_example(data[:-cut])


# --- framing, compression and damage ------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zlib", "none"])
def test_records_round_trip(tmp_path, compression, rng):
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 10, 5000, 300_000)]
    path = write_tfrecord(tmp_path / "r.tfrecords", records, compression)
    assert tfr.detect_compression(path) == compression
    assert list(tfr.iter_records(path)) == records
    assert list(tfr.iter_records(path, compression=compression)) == records
    assert list(tfr.iter_records(path, limit=2)) == records[:2]
    with tfr.TFRecordReader(path) as reader:
        assert reader.skip(3) == 3
        assert reader.read_record() == records[3]


def test_concatenated_gzip_members(tmp_path):
    recs = [b"first", b"second", b"third"]
    data = gzip.compress(frame(recs[0]) + frame(recs[1])) + gzip.compress(frame(recs[2]))
    path = tmp_path / "multi.tfrecords"
    path.write_bytes(data)
    assert list(tfr.iter_records(path)) == recs


def test_inflate_backends_agree(tmp_path, rng):
    records = [rng.integers(0, 4, 100_000, dtype=np.uint8).tobytes() for _ in range(3)]
    old = backends.inflate_backend()
    try:
        for comp in ("gzip", "zlib"):
            path = write_tfrecord(tmp_path / f"r.{comp}", records, comp)
            for name in backends.INFLATERS:
                backends.set_inflate_backend(name)
                assert list(tfr.iter_records(path)) == records, (comp, name)
    finally:
        backends.set_inflate_backend(old)


def _framed(records):
    return b"".join(frame(r) for r in records)


@pytest.mark.parametrize("compression", ["gzip", "zlib", "none"])
def test_data_crc_corruption_names_file_and_record(tmp_path, compression):
    records = [bytes([i]) * 200 for i in range(4)]
    raw = bytearray(_framed(records))
    offset = 2 * (12 + 200 + 4) + 12 + 50  # inside the data of record 2
    raw[offset] ^= 0x40
    data = {"gzip": gzip.compress, "zlib": zlib.compress, "none": bytes}[compression](bytes(raw))
    path = tmp_path / "bad.tfrecords"
    path.write_bytes(data)
    reader = tfr.iter_records(path, compression=compression)
    assert next(reader) == records[0] and next(reader) == records[1]
    with pytest.raises(DatasetError, match=r"bad\.tfrecords: record 2: data CRC mismatch"):
        next(reader)


def test_length_crc_corruption(tmp_path):
    raw = bytearray(_framed([b"a" * 10, b"b" * 10]))
    raw[26] ^= 0x01  # first byte of record 1's length
    path = tmp_path / "len.tfrecords"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match=r"len\.tfrecords: record 1: length CRC mismatch"):
        list(tfr.iter_records(path))
    # without CRC checks, an absurd length is still refused
    raw[26 + 7] ^= 0x80
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="record 1"):
        list(tfr.iter_records(path, compression="none", verify=False))


@pytest.mark.parametrize("compression", ["gzip", "zlib", "none"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.97])
def test_truncation_detected(tmp_path, compression, keep):
    rng = np.random.default_rng(0)
    records = [rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() for _ in range(5)]
    full = write_tfrecord(tmp_path / "full.tfrecords", records, compression).read_bytes()
    path = tmp_path / "cut.tfrecords"
    path.write_bytes(full[: int(len(full) * keep) - 7])  # (an uncompressed file cut exactly between two
    got = []                                             # records has no end marker to miss)
    with pytest.raises(DatasetError, match=r"cut\.tfrecords: record \d+: .*truncated") as info:
        for rec in tfr.iter_records(path, compression=compression):
            got.append(rec)
    assert got == records[: len(got)]  # everything returned before the error is intact
    assert f"record {len(got)}:" in str(info.value)
    assert "\n" not in str(info.value)


def test_gzip_trailer_missing_is_an_error(tmp_path):
    data = gzip.compress(_framed([b"x" * 100]))
    path = tmp_path / "trailer.tfrecords"
    path.write_bytes(data[:-4])  # every record complete, stream end missing
    with pytest.raises(DatasetError, match=r"record 1: truncated GZIP stream"):
        list(tfr.iter_records(path))


def test_corrupt_compressed_data(tmp_path):
    data = bytearray(gzip.compress(_framed([bytes(range(256)) * 40] * 3)))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "garbled.tfrecords"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"garbled\.tfrecords: record \d+: (corrupt GZIP data|data CRC)"):
        list(tfr.iter_records(path))


def test_not_a_tfrecord(tmp_path):
    path = tmp_path / "text.tfrecords"
    path.write_bytes(b"hello, this is not a TFRecord file")
    with pytest.raises(DatasetError, match="not a TFRecord file"):
        list(tfr.iter_records(path))
    with pytest.raises(DatasetError, match="no such file"):
        tfr.TFRecordReader(tmp_path / "missing.tfrecords")


# --- schemas --------------------------------------------------------------------------------------------


def test_schemas_cover_the_layouts():
    for name, (image, k, layout, floats, codes, has_vis, comp) in LAYOUTS.items():
        s = get_schema(name)
        assert s.image_shape == image and s.num_slots == k and s.mask_layout == layout
        assert s.compression == comp and s.has_visibility == has_vis
        assert {f.name: f.shape for f in s.factors if f.kind == "float"} == floats
        assert {f.name for f in s.factors if f.kind == "bytes"} == set(codes)
    assert get_schema("objects_room").background_labels == (0, 1, 2, 3)
    assert get_schema("clevr").name == "clevr_with_masks"
    assert set(LAYOUTS) | {"cater_with_masks"} == set(SCHEMAS)
    with pytest.raises(DatasetError, match="unknown multi-object dataset"):
        get_schema("nope")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_schema_round_trip(tmp_path, name, compression, rng):
    scenes = [make_scene(name, rng) for _ in range(2 if name == "clevr_with_masks" else 3)]
    records = [example(s["features"]) for s in scenes]
    path = write_tfrecord(tmp_path / f"{name}.tfrecords", records, compression)
    schema = get_schema(name)
    for payload, expected in zip(tfr.iter_records(path), scenes, strict=True):
        (scene,) = decode_record(schema, payload)
        assert scene.image.dtype == np.uint8 and np.array_equal(scene.image, expected["image"])
        assert scene.labels.dtype == np.uint8 and np.array_equal(scene.labels, expected["labels"])
        assert np.array_equal(scene.visibility, expected["visibility"])
        assert scene.num_objects == expected["num_objects"]
        assert set(scene.factors) == set(expected["factors"])
        for key, value in expected["factors"].items():
            assert scene.factors[key].dtype == value.dtype and np.array_equal(scene.factors[key], value), key


def test_cater_zlib_frames(tmp_path, rng):
    rec = make_cater_record(rng)
    path = write_tfrecord(tmp_path / "cater.tfrecords", [example(rec["features"])], "zlib")
    scenes = decode_record(get_schema("cater_with_masks"), next(tfr.iter_records(path)))
    assert len(scenes) == 33
    for t in (0, 17, 32):
        assert np.array_equal(scenes[t].image, rec["image"][t])
        assert np.array_equal(scenes[t].labels, rec["labels"][t])
        assert np.array_equal(scenes[t].factors["object_positions"], rec["positions"][:, t])
        assert np.array_equal(scenes[t].scene_factors["camera_matrix"], rec["camera"][t])


def test_label_map_rules():
    masks = np.zeros((3, 2, 3), dtype=np.uint8)
    masks[1, 0, :] = 255  # label 1 on row 0
    masks[2, :, 2] = 255  # label 2 on column 2, overlapping label 1 at (0, 2): the first mask wins
    masks[0, 1, 0] = 100  # below the 127 threshold: not covered
    assert label_map(masks).tolist() == [[1, 1, 1], [0, 0, 2]]


def test_wrong_schema_is_a_clear_error(rng):
    scene = make_scene("tetrominoes", rng)
    with pytest.raises(ExampleError, match="feature 'image' has 3675 values, expected 12288"):
        decode_record(get_schema("objects_room"), example(scene["features"]))
    with pytest.raises(ExampleError, match="missing feature 'x'"):
        without_x = {k: v for k, v in scene["features"].items() if k != "x"}
        decode_record(get_schema("tetrominoes"), example(without_x))


def test_header_only_file_is_truncated(tmp_path):
    path = tmp_path / "h.tfrecords"
    path.write_bytes(struct.pack("<Q", 5) + struct.pack("<I", backends.mask_crc(backends.crc32c(struct.pack("<Q", 5)))))
    with pytest.raises(DatasetError, match="record 0: file is truncated"):
        list(tfr.iter_records(path))
