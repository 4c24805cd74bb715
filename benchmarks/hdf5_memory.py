"""Benchmark: resident memory while training-style iteration streams a large converted HDF5 file.

Builds a synthetic file in the ``scenedecomp data convert`` format (objects_room layout: 64x64x3 uint8
images, 64x64 label maps, K=7 visibility, gzip-4 chunks of one scene) with ``--num-images`` scenes
(default 200,000, ~0.3 GB on disk; ``--num-images 1000000`` for the full Objects Room size, ~1.4 GB and
~3.5 minutes to build on 2 cores), then iterates a shuffled ``DataLoader`` (``--workers`` processes,
batch 64) over ``--batches`` batches through ``open_dataset(path)``, sampling the resident memory of
the parent and its worker processes from ``/proc`` every ``--sample-every`` batches.

Prints JSON: the file's size, build time, batches/s, and the peak of the summed RSS (parent + workers)
and of the summed PSS (proportional set size: shared library pages counted once, a truer total), plus
the first and last samples, which show whether memory grows with the number of scenes read.

    python benchmarks/hdf5_memory.py --num-images 200000 --batches 3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from scenedecomp.data import open_dataset
from scenedecomp.data.deepmind.convert import Preprocessing, _Writer
from scenedecomp.data.deepmind.multi_object import get_schema


def build(path: Path, num_images: int, seed: int = 0, block: int = 2048) -> float:
    """Write a complete synthetic objects_room-layout file; returns seconds taken."""
    t0 = time.perf_counter()
    schema = get_schema("objects_room")
    rng = np.random.default_rng(seed)
    pool = 64
    coarse = rng.integers(0, 256, (pool, 16, 16, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(coarse, 4, 1), 4, 2)  # blocky: compresses like rendered scenes
    labels = np.repeat(np.repeat(rng.integers(0, 7, (pool, 16, 16), dtype=np.uint8), 4, 1), 4, 2)
    attrs = {"format": "scenedecomp.multi_object", "format_version": 1, "dataset": "objects_room",
             "description": "synthetic (benchmarks/hdf5_memory.py)", "signature": "synthetic",
             "channels": 3, "num_slots": 7, "background_labels": np.array([0, 1, 2, 3]), "max_objects": 3,
             "factor_names": "[]", "categorical_factors": "[]",
             "preprocessing": json.dumps(Preprocessing().describe()),
             "split_fractions": np.array([1.0, 0, 0]),
             "source_file": "synthetic", "source_size": 0, "visibility_source": "synthetic",
             "image_size": np.array([64, 64])}
    writer = _Writer.create(path, schema, Preprocessing(), "gzip", attrs)
    f = writer.f
    for start in range(0, num_images, block):
        n = min(block, num_images - start)
        pick = rng.integers(0, pool, n)
        rows = {"images": images[pick], "masks": labels[pick],
                "visibility": np.ones((n, 7), dtype=np.float32),
                "num_objects": np.full(n, 3, dtype=np.int16),
                "source_index": np.arange(start, start + n, dtype=np.int64)}
        for name, value in rows.items():
            f[name].resize(start + n, axis=0)
            f[name][start:start + n] = value
        f.attrs["num_written"] = start + n
    writer.finish((1.0, 0.0, 0.0))
    f.close()
    return time.perf_counter() - t0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample() -> dict:
    pids = [os.getpid(), *_children(os.getpid())]
    rss = [_kb(f"/proc/{p}/status", "VmRSS:") for p in pids]
    pss = [_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids]
    return {"processes": len(pids), "rss_mb": sum(rss) / 1024, "pss_mb": sum(pss) / 1024,
            "parent_rss_mb": rss[0] / 1024}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=200_000)
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample-every", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the file (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "synthetic_objects_room.h5"
        build_s = build(path, args.num_images)
        ds = open_dataset(path, split="train", image_size=64)
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            persistent_workers=args.workers > 0, drop_last=True)
        samples = [{"batch": 0, **sample()}]
        done = 0
        t0 = time.perf_counter()
        while done < args.batches:
            for batch in loader:
                done += 1
                assert batch["image"].shape == (args.batch_size, 3, 64, 64)
                if done % args.sample_every == 0:
                    samples.append({"batch": done, **sample()})
                if done >= args.batches:
                    break
        seconds = time.perf_counter() - t0
        result = {
            "benchmark": "hdf5_memory", "python": platform.python_version(), "cpus": os.cpu_count(),
            "num_images": args.num_images, "file_mb": path.stat().st_size / 1e6, "build_seconds": build_s,
            "batches": done, "batch_size": args.batch_size, "workers": args.workers,
            "scenes_read": done * args.batch_size, "batches_per_second": done / seconds,
            "peak_rss_mb_parent_plus_workers": max(s["rss_mb"] for s in samples),
            "peak_pss_mb_parent_plus_workers": max(s["pss_mb"] for s in samples),
            "peak_parent_rss_mb": max(s["parent_rss_mb"] for s in samples),
            "first_sample_with_workers": next((s for s in samples if s["processes"] > 1), samples[0]),
            "last_sample": samples[-1],
            "series_batch_rss_pss_mb": [[s["batch"], round(s["rss_mb"]), round(s["pss_mb"])]
                                        for s in samples],
        }
        del loader
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
