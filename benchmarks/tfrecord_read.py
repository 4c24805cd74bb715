"""Benchmark: read CLEVR-sized TFRecords with scenedecomp's reader vs the ``tfrecord`` PyPI package.

Writes one synthetic GZIP TFRecord file in the clevr_with_masks layout (240x320x3 image and 11 masks
stored as one-byte strings, ~3.2 MB per record uncompressed; smooth rendered-looking images so that the
file compresses roughly like the real one), then times, on that same file and in the same run:

- ``scenedecomp``: :class:`scenedecomp.data.deepmind.tfrecord.TFRecordReader` (CRC checked) + ``parse_example``,
  once per combination of the available inflate backends (``zlib`` always; ``zlib-ng``/``isal`` when
  installed) and CRC32C backends (``numpy`` always; ``crc32c``/``google-crc32c`` when installed);
- ``scenedecomp_decode``: the same plus decoding into the label map and factors (``decode_record``);
- ``tfrecord``: ``tfrecord.reader.tfrecord_loader`` (no CRC checks) with uint8 views of the byte
  features, if the package is importable (``pip install tfrecord``); otherwise a note in the JSON.

Each reader makes ``--repeats`` full passes; the best pass counts. Prints JSON (per-record wall-clock and
CPU milliseconds, the ratios tfrecord / scenedecomp) and writes it to ``--out`` if given. On a shared
machine the CPU-time ratio is the steadier number.

    python benchmarks/tfrecord_read.py --records 50
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tfrecord_writer import example, float_feature, frame, one_byte_strings  # noqa: E402

from scenedecomp.data.deepmind import tfrecord as tfr  # noqa: E402
from scenedecomp.data.deepmind import tfrecord_backends as backends  # noqa: E402
from scenedecomp.data.deepmind.example_proto import parse_example  # noqa: E402
from scenedecomp.data.deepmind.multi_object import decode_record, get_schema  # noqa: E402

H, W, K = 240, 320, 11


def synthetic_clevr(rng: np.random.Generator) -> bytes:
    """One serialized Example in the clevr_with_masks layout with CLEVR-like content."""
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.empty((H, W, 3), dtype=np.float32)
    image[:] = (110 + 0.1 * yy + 0.02 * xx)[..., None]
    labels = np.zeros((H, W), dtype=np.int64)
    n = int(rng.integers(3, 11))
    for obj in range(1, n + 1):
        cy, cx, r = rng.integers(60, 200), rng.integers(40, 280), rng.integers(10, 30)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        labels[disk] = obj
        shade = 1 - 0.3 * ((yy - cy + r) / (2 * r)).clip(0, 1)
        image[disk] = rng.integers(40, 220, 3) * shade[disk][:, None]
    image += rng.normal(0, 1.5, image.shape)
    image_u8 = image.clip(0, 255).astype(np.uint8)
    masks = np.stack([(labels == k) * 255 for k in range(K)]).astype(np.uint8)[..., None]
    vis = (np.arange(K) <= n).astype(np.float32)
    feats = {"image": one_byte_strings(image_u8), "mask": one_byte_strings(masks)}
    for name in ("x", "y", "z", "rotation"):
        feats[name] = float_feature(rng.standard_normal(K) * vis)
    feats["pixel_coords"] = float_feature(rng.standard_normal((K, 3)) * vis[:, None])
    for name in ("size", "material", "shape", "color"):
        feats[name] = one_byte_strings((rng.integers(1, 4, K) * vis).astype(np.uint8))
    feats["visibility"] = float_feature(vis)
    return example(feats)


def write_file(path: Path, records: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    raw = 0
    with gzip.open(path, "wb", compresslevel=6) as fh:
        for _ in range(records):
            rec = synthetic_clevr(rng)
            raw += len(rec)
            fh.write(frame(rec, backends.crc32c))
    return {"records": records, "uncompressed_mb_per_record": raw / records / 1e6,
            "file_mb": path.stat().st_size / 1e6}


CPU_SECONDS: dict[int, float] = {}


def best_pass(fn, repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` passes (the best CPU seconds go to ``CPU_SECONDS[id(fn)]``)."""
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_SECONDS[id(fn)] = min(cpu)
    return min(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    result: dict = {"benchmark": "tfrecord_read", "python": platform.python_version(),
                    "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clevr_synthetic.tfrecords"
        result["file"] = write_file(path, args.records)
        n = args.records
        schema = get_schema("clevr_with_masks")

        def ours():
            count = 0
            for rec in tfr.iter_records(path, compression="gzip"):
                feats = parse_example(rec)
                assert feats["mask"].shape == (K * H * W,)
                count += 1
            assert count == n

        def ours_decode():
            for rec in tfr.iter_records(path, compression="gzip"):
                decode_record(schema, rec)

        def io_only():
            for _ in tfr.iter_records(path, compression="gzip", verify=False):
                pass

        scenedecomp: dict = {}
        cpu: dict = {}
        default = f"inflate={backends.inflate_backend()},crc={backends.crc_backend()}"
        default_crc, default_inflate = backends.crc_backend(), backends.inflate_backend()
        for inflate in backends.INFLATERS:
            for crc in backends.CRC_BACKENDS:
                backends.set_crc_backend(crc)
                backends.set_inflate_backend(inflate)
                key = f"inflate={inflate},crc={crc}"
                scenedecomp[key] = best_pass(ours, args.repeats) / n * 1e3
                cpu[key] = CPU_SECONDS[id(ours)] / n * 1e3
        backends.set_crc_backend(default_crc)
        backends.set_inflate_backend(default_inflate)
        result["scenedecomp_ms_per_record"] = scenedecomp
        result["scenedecomp_cpu_ms_per_record"] = cpu
        result["scenedecomp_default_backends"] = default
        result["standard_library_only"] = "inflate=zlib,crc=numpy"
        result["scenedecomp_decode_ms_per_record"] = best_pass(ours_decode, args.repeats) / n * 1e3
        result["decompress_and_framing_only_ms_per_record"] = best_pass(io_only, args.repeats) / n * 1e3

        try:
            from tfrecord.reader import tfrecord_loader
        except ImportError:
            result["tfrecord"] = None
            result["note"] = "the tfrecord package is not installed (pip install tfrecord); no comparison"
        else:
            def theirs():
                count = 0
                for feats in tfrecord_loader(str(path), None, None, compression_type="gzip"):
                    mask = feats["mask"].view(np.uint8)
                    feats["image"].view(np.uint8)
                    assert mask.shape == (K * H * W,)
                    count += 1
                assert count == n

            # same arrays from both readers
            ref = next(iter(tfrecord_loader(str(path), None, None, compression_type="gzip")))
            mine = parse_example(next(tfr.iter_records(path)))
            assert np.array_equal(ref["mask"].view(np.uint8), mine["mask"])
            assert np.array_equal(ref["x"], mine["x"])
            t_ms = best_pass(theirs, args.repeats) / n * 1e3
            t_cpu = CPU_SECONDS[id(theirs)] / n * 1e3
            result["tfrecord_ms_per_record"] = t_ms
            result["tfrecord_cpu_ms_per_record"] = t_cpu
            result["cpu_ratio_tfrecord_over_scenedecomp"] = {b: t_cpu / v for b, v in cpu.items()}
            result["ratio_tfrecord_over_scenedecomp"] = {b: t_ms / v for b, v in scenedecomp.items()}
            result["ratio_with_default_backends"] = t_ms / scenedecomp[default]
            result["ratio_standard_library_only"] = t_ms / scenedecomp["inflate=zlib,crc=numpy"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
