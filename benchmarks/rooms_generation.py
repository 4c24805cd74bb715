"""Generation speed of the objects_room-like procedural scenes and a figure of 16 of them with their label maps."""

import sys

import numpy as np

from scenedecomp.data.synthetic.rooms import generate_objects_room_like


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/rooms_generation.py [--speed N] [--figure PATH]``: single-thread generation speed
    (parameters and rendering of N 64x64 training scenes, one render thread) and/or a figure of 16 scenes
    with their label maps."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python benchmarks/rooms_generation.py", description=main.__doc__)
    parser.add_argument("--speed", type=int, metavar="N", help="time the generation of N 64x64 scenes")
    parser.add_argument("--figure", metavar="PATH", help="save 16 scenes and their label maps (PNG)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.speed:
        generate_objects_room_like(64, seed=args.seed + 1, workers=1)  # warm up
        start = time.perf_counter()
        generate_objects_room_like(args.speed, seed=args.seed, workers=1)
        seconds = time.perf_counter() - start
        print(f"{args.speed} scenes at 64x64 in {seconds:.2f} s: {args.speed / seconds:.0f} images/s (one thread)")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        arrays = generate_objects_room_like(16, seed=args.seed)
        names = ["0 sky", "1 floor", "2 left wall", "3 right wall", "4 object", "5 object", "6 object"]
        colours = ["#9ecae1", "#a6761d", "#d9d9d9", "#737373", "#e6550d", "#31a354", "#756bb1"]
        fig, axes = plt.subplots(4, 8, figsize=(16, 9.8))
        for i, (top, left) in enumerate((r, c) for r in range(4) for c in range(0, 8, 2)):
            labels = sorted(set(np.unique(arrays["mask"][i]).tolist()))
            axes[top, left].imshow(arrays["image"][i], interpolation="nearest")
            axes[top, left].set_title(f"scene {i}: {arrays['num_objects'][i]} object(s)", fontsize=9)
            axes[top, left + 1].imshow(arrays["mask"][i], cmap=ListedColormap(colours), vmin=-0.5, vmax=6.5,
                                       interpolation="nearest")
            axes[top, left + 1].set_title("labels " + ",".join(map(str, labels)), fontsize=9)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, names)], loc="lower center",
                   ncol=7, fontsize=10, frameon=False)
        fig.suptitle(f"objects_room_like train, seed {args.seed}: scenes 0-15 (64x64) and label maps "
                     f"(background labels 0-3)", fontsize=12)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97), h_pad=1.2)
        fig.savefig(args.figure, dpi=72)
        print(f"figure written to {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
