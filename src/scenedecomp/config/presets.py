"""Preset files: finding them and composing them from fragments (YAML only; no schema, no torch).

A preset is a YAML file: one of the package's ``configs/*.yaml`` (``src/scenedecomp/configs``, shipped in
the wheel; ``scenedecomp presets`` lists them) or any path. It may start from fragments and then state
only its differences::

    defaults: {model: monet-paper, dataset: objects_room}
    name: monet-objects-room
    notes: ...

``model: NAME`` is ``configs/model/NAME.yaml`` and ``dataset: NAME`` is ``configs/dataset/NAME.yaml`` (either
may be left out; ``model/``, ``dataset/`` and ``override/`` folders beside a preset file outside the package
are searched first). A fragment is a partial run config and may itself say ``defaults:`` (``model/monet-rn50.yaml``
starts from ``model/monet-paper.yaml``). When a preset names both, ``configs/override/MODEL+DATASET.yaml``
is applied too if it exists: what that model needs on that dataset (the paper's 6-block U-Net at 128x128).

A preset may instead start from another preset and state what differs, which keeps a compared pair
from drifting apart (the CPU MONet-vs-RN* presets)::

    defaults: {preset: monet-sprites64-cpu}
    name: monet-rn18star-sprites64-cpu
    model: {attention: {type: resnet_skip, backbone: resnet18}}

``preset: NAME`` is ``NAME.yaml`` beside the preset, else the packaged ``configs/NAME.yaml`` (``preset:
FILE.yaml``: that file beside the preset); it cannot be combined with ``model``/``dataset`` (the base
preset already chose them).

:func:`preset_layers` returns the layers in merge order: the model fragment (after its own defaults),
the dataset fragment, the model x dataset override, then the preset itself.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import BadConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # packaged: src/scenedecomp/configs/*.yaml
GROUPS = ("model", "dataset")  # fragment folders under CONFIG_DIR
BASE = "preset"  # defaults: {preset: NAME} starts from another preset
OVERRIDE_DIR = "override"  # CONFIG_DIR/override/MODEL+DATASET.yaml


class PresetError(BadConfig, ValueError):
    """A preset file cannot be found, read or composed (one-line message)."""


def list_presets() -> list[str]:
    """The packaged presets (top-level ``configs/*.yaml``; fragments in subfolders are not presets)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def list_fragments(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``monet-demo``) or a YAML path to an existing regular file."""
    path = Path(name_or_path).expanduser()
    packaged = CONFIG_DIR / f"{name_or_path}.yaml"
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1 and packaged.is_file():
        return packaged
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1 or path.exists() or path.is_symlink():
        if path.is_dir():
            raise PresetError(f"{path}: is a directory, not a config file (give a preset name or a .yaml file)")
        if path.exists() and not path.is_file():
            raise PresetError(f"{path}: is not a regular file (give a preset name or a .yaml file)")
        if not path.exists():
            raise PresetError(f"{path}: no such config file")
        return path
    raise PresetError(f"unknown preset {str(name_or_path)!r}; known presets: {', '.join(list_presets())}")


def read_yaml(path: Path) -> DictConfig:
    """A YAML file whose top level is a mapping, read by the one bounded loader (:func:`~..safeio.load_yaml`)."""
    from ..safeio import load_yaml

    loaded = load_yaml(path, "config file", error=PresetError)
    if not isinstance(loaded, dict):
        kind = "empty file" if loaded is None else type(loaded).__name__
        raise PresetError(f"{path}: the top level must be a mapping of settings (key: value), not a {kind}")
    try:
        return OmegaConf.create(loaded)
    except Exception as err:  # noqa: BLE001 - OmegaConf refuses some keys (non-string, interpolation errors)
        raise PresetError(f"{path}: cannot read the settings ({str(err).splitlines()[0]})") from None


def _defaults(path: Path, body: DictConfig) -> dict[str, str]:
    """Pop and check ``defaults: {model: NAME, dataset: NAME}`` from ``body``."""
    if "defaults" not in body:
        return {}
    raw = OmegaConf.to_container(body.pop("defaults"))
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise PresetError(f"{path}: defaults must be a mapping like {{model: monet-paper, dataset: objects_room}}")
    unknown = sorted(set(raw) - {*GROUPS, BASE})
    if unknown:
        raise PresetError(f"{path}: defaults: unknown group {unknown[0]!r}; expected {', '.join(GROUPS)} or {BASE}")
    if BASE in raw and len(raw) > 1:
        raise PresetError(f"{path}: defaults: {BASE} cannot be combined with {' or '.join(GROUPS)} "
                          f"(the base preset chose them; state the differences in the file)")
    return dict(raw)


def _fragment(group: str, name: str, root: Path, origin: Path) -> Path:
    for folder in (root / group, CONFIG_DIR / group):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise PresetError(f"{origin}: defaults: unknown {group} {name!r}; known: {', '.join(list_fragments(group))}")


def preset_layers(path: Path, root: Path | None = None, _seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """``[(file, settings), ...]`` to merge in order for the preset file ``path`` (see the module docstring).

    Fragments are looked up in ``root`` (the preset's folder) and then in the package's ``configs/``.
    """
    root = path.parent if root is None else root
    if path.resolve() in _seen:
        raise PresetError(f"{path}: defaults form a loop ({' -> '.join(p.stem for p in (*_seen, path))})")
    seen = (*_seen, path.resolve())
    body = read_yaml(path)
    defaults = _defaults(path, body)
    layers: list[tuple[Path, DictConfig]] = []
    if BASE in defaults:
        name = defaults[BASE]
        local = Path(name).suffix in (".yaml", ".yml")  # a file name: beside the preset only
        base = root / (name if local else f"{name}.yaml")
        if not base.is_file():
            try:
                base = preset_path(name if not local else base)
            except PresetError as err:
                raise PresetError(f"{path}: defaults: {err}") from None
        layers += preset_layers(base, root, seen)
    for group in GROUPS:
        if group in defaults:
            layers += preset_layers(_fragment(group, defaults[group], root, path), root, seen)
    if len(defaults) == len(GROUPS):
        override = _override(defaults["model"], defaults["dataset"], root)
        if override is not None:
            layers += preset_layers(override, root, seen)
    return [*layers, (path, body)]


def _override(model: str, dataset: str, root: Path) -> Path | None:
    for folder in (root / OVERRIDE_DIR, CONFIG_DIR / OVERRIDE_DIR):
        candidate = folder / f"{model}+{dataset}.yaml"
        if candidate.is_file():
            return candidate
    return None
