"""``scenedecomp presets``: the YAML presets and the first line of their notes."""

from __future__ import annotations


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("presets", help="list the YAML presets")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config.presets import list_presets, preset_path, read_yaml

    for name in list_presets():
        notes = str(read_yaml(preset_path(name)).get("notes", "") or "")
        print(f"{name:34s} {notes.strip().splitlines()[0] if notes.strip() else ''}")
    return 0
