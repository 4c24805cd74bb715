"""``scenedecomp data ...`` subcommands: ``convert`` (TFRecord -> HDF5) and ``info`` (describe files).

    scenedecomp data convert clevr_with_masks --src clevr_with_masks_train.tfrecords --out data/
    scenedecomp data convert objects_room --src objects_room_train.tfrecords --out data/ --limit 10000
    scenedecomp data info data/

Errors raise :class:`scenedecomp.data.DatasetError` with one line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse

from ..data.deepmind.multi_object import SCHEMAS

__all__ = ["add_parsers"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _crop(text: str):
    if text.lower() in ("none", "no", "off"):
        return None
    if text.lower() == "default":
        return "default"
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected top,left,height,width, default or none; got {text!r}") from None
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected four numbers top,left,height,width; got {text!r}")
    return box


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..data.deepmind.convert import convert, describe

    out = convert(args.dataset, args.src, args.out, limit=args.limit, image_size=args.image_size,
                  crop=args.crop, center_crop=args.center_crop, antialias=args.antialias,
                  max_objects=args.max_objects, clevr6=args.clevr6, splits=args.splits,
                  compression=args.compression, restart=args.restart, overwrite=args.overwrite,
                  progress=not args.no_progress, verify=not args.no_verify)
    print(describe(out))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ..data.deepmind.convert import describe

    for i, path in enumerate(args.paths):
        if i:
            print()
        print(describe(path))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for name, schema in SCHEMAS.items():
        print(f"{name:38s} {schema.filename:46s} {schema.description}")
    return 0


def add_parsers(subparsers) -> None:
    """Add ``data {convert,info,list}`` to an argparse ``subparsers`` object; handlers are in ``func``."""
    data = subparsers.add_parser(
        "data", help="convert and inspect datasets",
        description="Convert DeepMind multi-object TFRecords to HDF5 and inspect them.")
    sub = data.add_subparsers(dest="data_command", metavar="{convert,info,list}")
    sub.required = True

    conv = sub.add_parser(
        "convert", help="convert a multi-object TFRecord file to a chunked HDF5 file",
        description="Convert one TFRecord file of DeepMind's multi-object datasets into <out>/<dataset>.h5. "
                    "An interrupted conversion resumes when run again with the same arguments.")
    conv.add_argument("dataset", choices=sorted(SCHEMAS), metavar="dataset",
                      help="one of: " + ", ".join(SCHEMAS))
    conv.add_argument("--src", required=True, help="the .tfrecords file")
    conv.add_argument("--out", required=True, help="output directory")
    conv.add_argument("--limit", type=int, default=None, help="stop after N scenes")
    conv.add_argument("--image-size", type=int, default=None,
                      help="resize to SxS (default: clevr_with_masks 128, others unchanged)")
    conv.add_argument("--crop", type=_crop, default="default",
                      help="top,left,height,width | none | default (clevr_with_masks: 29,64,192,192)")
    conv.add_argument("--center-crop", type=int, default=None,
                      help="centred square crop of this side instead (tetrominoes: 32)")
    conv.add_argument("--antialias", action="store_true", help="antialiased bilinear resizing")
    conv.add_argument("--clevr6", action="store_true", help="keep CLEVR scenes with at most 6 objects")
    conv.add_argument("--max-objects", type=int, default=None, help="keep scenes with at most N objects")
    conv.add_argument("--splits", type=_floats, default=None,
                      help="train,val,test fractions (default 0.9,0.05,0.05; objects_room test files 0,0,1)")
    conv.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                      help="HDF5 compression of images and label maps (default gzip)")
    conv.add_argument("--restart", action="store_true", help="discard a partial conversion and start over")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing finished file")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.add_argument("--no-verify", action="store_true", help="skip the record CRC checks")
    conv.set_defaults(func=_cmd_convert)

    info = sub.add_parser(
        "info", help="describe converted files",
        description="Print counts, shapes, split sizes and preprocessing of converted files.")
    info.add_argument("paths", nargs="+", help="a .h5 file or a directory of them")
    info.set_defaults(func=_cmd_info)

    lst = sub.add_parser("list", help="list the multi-object datasets that can be converted")
    lst.set_defaults(func=_cmd_list)
