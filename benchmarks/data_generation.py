"""Benchmark: generate a ``multi_sprites`` split in memory (no cache write) and print JSON.

    python benchmarks/data_generation.py [--num-images 100000] [--image-size 64] [--dataset multi_sprites]

Prints ``{"images", "seconds", "images_per_s", ...}``. With ``--cache-dir`` it also times writing the
cache file and re-opening it (memory map).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from scenedecomp.data import open_dataset
from scenedecomp.data.synthetic.procedural import num_workers as _num_workers
from scenedecomp.data.synthetic.sprites import generate_multi_sprites, generate_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("multi_sprites", "shapes"), default="multi_sprites")
    parser.add_argument("--num-images", type=int, default=100_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cache", action="store_true", help="also time open_dataset (write + reopen)")
    args = parser.parse_args()

    generate = generate_multi_sprites if args.dataset == "multi_sprites" else generate_shapes
    start = time.perf_counter()
    arrays = generate(args.num_images, image_size=args.image_size)
    seconds = time.perf_counter() - start
    result = {"images": args.num_images, "seconds": round(seconds, 3),
              "images_per_s": round(args.num_images / seconds, 1), "dataset": args.dataset,
              "image_size": args.image_size, "threads": _num_workers(),
              "megabytes": round(sum(a.nbytes for a in arrays.values()) / 2**20, 1)}
    del arrays
    if args.cache:
        with tempfile.TemporaryDirectory() as cache_dir:
            options = {"num_images": args.num_images, "image_size": args.image_size, "cache_dir": cache_dir}
            start = time.perf_counter()
            open_dataset(args.dataset, "train", **options)
            result["generate_and_write_seconds"] = round(time.perf_counter() - start, 3)
            start = time.perf_counter()
            dataset = open_dataset(args.dataset, "train", **options)
            result["reopen_seconds"] = round(time.perf_counter() - start, 4)
            start = time.perf_counter()
            for i in range(0, len(dataset), 64):
                dataset.get_batch(range(i, min(i + 64, len(dataset))))
            result["read_all_batches_seconds"] = round(time.perf_counter() - start, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
