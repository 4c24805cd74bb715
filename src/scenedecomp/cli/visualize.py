"""``scenedecomp visualize``: decomposition figures, latent traversals or slot-swap samples of a run."""

from __future__ import annotations

from ..errors import BadInput


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("visualize", help="draw decomposition figures", description=(
        "Draw decomposition figures (input, reconstruction, segmentation, per-slot reconstructions) "
        "and, for AIR, the attention boxes."))
    p.add_argument("run", help="run directory, .ckpt file, model folder or pretrained:NAME")
    p.add_argument("--out", required=True, help="output directory for PNG files")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--num-slots", type=int, default=None)
    p.add_argument("--traversals", action="store_true", help=(
        "instead: latent traversals of one slot (rows = latent dimensions ranked by how much they move the "
        "slot's decoded mask; slot component and recomposed scene) and the component-VAE figure; AIR: z_what "
        "glimpses"))
    p.add_argument("--samples", action="store_true", help=(
        "instead: scenes decoded from latents with one slot's latent swapped between two test images "
        "(--num-images / 2 pairs)"))
    p.add_argument("--image", default=None, help=(
        "--traversals: index into --split, or an image file (default: the test image and slot, among the "
        "first 16, whose latents move the decoded mask most)"))
    p.add_argument("--slot", type=int, default=None, help="--traversals: slot (default: chosen with the image, "
                   "or the largest foreground slot)")
    p.add_argument("--top", type=int, default=None, help="--traversals: only the top N dimensions")
    p.add_argument("--sigma", default="data", choices=("data", "prior", "posterior"), help=(
        "--traversals: the sweep: each dimension from its 2nd to 98th percentile over 64 images of --split "
        "(data, default), or the posterior mean -3..+3 prior std (prior) or posterior std (posterior)"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.evaluate import visualize

    if args.traversals:
        from ..evaluation.latent_figures import write_traversals

        if args.top is not None and args.top < 1:
            raise BadInput(f"--top must be at least 1, got {args.top}")
        for path in write_traversals(args.run, args.out, split=args.split, image=args.image, slot=args.slot,
                                     top=args.top, num_slots=args.num_slots, sigma=args.sigma):
            print(path)
        return 0
    if args.samples:
        from ..evaluation.latent_figures import write_samples

        if (args.num_images // 2 or 1) < 1:  # pairs of images: --num-images 0 or 1 still draws one pair
            raise BadInput(f"--num-images must be at least 1, got {args.num_images}")
        for path in write_samples(args.run, args.out, split=args.split, num_swaps=args.num_images // 2 or 1,
                                  num_slots=args.num_slots):
            print(path)
        return 0

    if args.num_images < 1:
        raise BadInput(f"--num-images must be at least 1, got {args.num_images}")
    for path in visualize(args.run, args.out, split=args.split, num_images=args.num_images,
                          num_slots=args.num_slots):
        print(path)
    return 0
