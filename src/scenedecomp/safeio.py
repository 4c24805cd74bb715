"""Every file the package reads from a user or writes for one, in one place.

Reading, with bounds: the one YAML loader, bounded reads that follow no symlink. Writing: output names
derived from input names, the checks that keep every write inside its output folder and away from
checkpoints, configs and inputs, the one writable-folder probe (:func:`unwritable_reason`) and the one
atomic writer (:func:`atomic_write_bytes`; text, JSON, figures, arrays and checkpoints go through it): a
temp file in the target's folder, given the umask's mode and renamed over the target, so a kill at any
moment leaves the old file or the new one, never half of one. A folder written as a whole (decompose's
outputs, an exported model folder) is filled under a temporary name and swapped in by
:func:`replace_folder`; a file written in place under another name (a resumable conversion) is renamed by
:func:`publish_file`. Nothing else in the package renames files.

Only the standard library, PyYAML and OmegaConf's YAML loader are imported here (no torch), so the
command line can use it before anything heavy is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from .errors import BadConfig, BadInput, ResourceLimit, RunError, one_line

# ----------------------------------------------------------------------------------------------- bounds
MAX_PIXELS = 40_000_000  # an image with more pixels (read from its header) is not decoded
MAX_SLOTS = 128  # K, in configs and at inference
MAX_IMAGE_SIZE = 1024  # data.image_size
MAX_BATCH_SIZE = 4096  # data.batch_size, --batch-size
MAX_TEXT_BYTES = 4 << 20  # a YAML or JSON file we parse
MAX_EMBED_BYTES = 64 << 20  # one file inlined into a report
MAX_YAML_NODES = 10_000  # YAML nodes after alias expansion ("billion laughs")


def check_bound(what: str, value: int, low: int, high: int) -> int:
    """``value`` if ``low <= value <= high``; else :class:`BadInput` (below) or :class:`ResourceLimit` (above)."""
    if value < low:
        raise BadInput(f"{what} must be at least {low}, got {value}")
    if value > high:
        raise ResourceLimit(f"{what}: {value} is above the limit of {high}")
    return value


# ----------------------------------------------------------------------------------------------- reading
def read_bytes(path: str | os.PathLike, limit: int, what: str = "file", follow_symlinks: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); a symlink (unless ``follow_symlinks``),
    a device, a FIFO or a directory is refused with :class:`BadInput`, a larger file with
    :class:`ResourceLimit`. Never blocks on a FIFO and never reads more than ``limit + 1`` bytes."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    if not follow_symlinks and path.is_symlink():
        raise BadInput(f"{path}: {what} is a symbolic link; not followed")
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise BadInput(f"{path}: cannot read {what} ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise BadInput(f"{path}: {what} is {kind}")
        if info.st_size > limit:
            raise ResourceLimit(f"{path}: {what} is {info.st_size} bytes, above the limit of {limit}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise ResourceLimit(f"{path}: {what} is larger than the limit of {limit} bytes")
        return b"".join(chunks)
    except OSError as err:
        raise BadInput(f"{path}: cannot read {what} ({err.strerror or err})") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, what: str = "file", limit: int = MAX_TEXT_BYTES) -> str:
    data = read_bytes(path, limit, what, follow_symlinks=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: {what} is not UTF-8 text") from None


def parse_yaml(text: str, source: str, error=BadConfig) -> Any:
    """Parse YAML ``text`` with OmegaConf's safe loader (no Python tags) and a fixed cap on the nodes after
    alias expansion (no environment variable lifts it); any problem is one line of ``error``."""
    import yaml
    from omegaconf._yaml import get_yaml_loader

    if len(text) > MAX_TEXT_BYTES:
        raise ResourceLimit(f"{source}: {len(text)} characters of YAML, above the limit of {MAX_TEXT_BYTES}")
    try:
        return yaml.load(text, Loader=get_yaml_loader(max_yaml_expanded_nodes=MAX_YAML_NODES))  # noqa: S506
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or one_line(err)
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise error(f"{source}: cannot parse YAML: {one_line(problem)}{where}") from None
    except RecursionError:
        raise error(f"{source}: cannot parse YAML: nested too deeply") from None


def load_yaml(path: str | os.PathLike, what: str = "YAML file", error=BadConfig) -> Any:
    """The one way a YAML file is read: a bounded read of a regular file, then :func:`parse_yaml`."""
    return parse_yaml(read_text(path, what), str(path), error)


def load_json(path: str | os.PathLike, what: str = "JSON file", limit: int = MAX_TEXT_BYTES) -> Any:
    """A bounded read of a JSON file; damaged JSON is one line of :class:`BadInput`."""
    text = read_text(path, what, limit)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BadInput(f"{path}: {what} is not valid JSON ({one_line(err)})") from None


# ----------------------------------------------------------------------------------------------- writing
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_name(name: str, fallback: str = "item", limit: int = 120) -> str:
    """A file or folder name derived from ``name`` that stays one level down: separators, control and
    reserved characters become ``_``, leading dots and spaces are dropped (no ``..``, no hidden files),
    and an empty result becomes ``fallback``."""
    cleaned = _UNSAFE.sub("_", str(name)).lstrip(". ").rstrip(" ")[:limit]
    return cleaned if cleaned and cleaned not in (".", "..") else fallback


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True if ``path`` resolves (symlinks followed) to ``root`` or somewhere below it."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    if not is_inside(path, root):
        raise BadInput(f"{path}: output would be written outside {root}; refused")
    return Path(path)


PROTECTED_SUFFIXES = (".ckpt", ".pt", ".pth", ".yaml", ".yml", ".h5", ".hdf5", ".tfrecord", ".tfrecords", ".npz",
                      ".gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
PROTECTED_NAMES = ("env.json", "history.jsonl", ".scenedecomp-run", "skipped_steps.jsonl", "nonfinite_batch.json")


def check_output_file(target: str | os.PathLike, what: str, allowed_suffixes: tuple[str, ...],
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse an output file that would replace a checkpoint, config, data file, run file or one of
    ``inputs``, or that has a suffix not in ``allowed_suffixes``; returns the path."""
    target = Path(target).expanduser()
    if target.is_dir():
        raise BadInput(f"{target}: is a directory; give a file path for the {what}")
    suffix = target.suffix.lower()
    if suffix not in allowed_suffixes:
        raise BadInput(f"{target}: the {what} must be a {' or '.join(allowed_suffixes)} file")
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_file():
            raise BadInput(f"{target}: exists and is not a regular file; refusing to replace it with the {what}")
        if target.name in PROTECTED_NAMES or suffix in PROTECTED_SUFFIXES:
            raise BadInput(f"{target}: refusing to replace this file with the {what}")
    for source in inputs:
        if Path(source).exists() and target.resolve() == Path(source).resolve():
            raise BadInput(f"{target}: is an input of this command; refusing to replace it with the {what}")
    return target


__all__ = ["MAX_BATCH_SIZE", "MAX_IMAGE_SIZE", "MAX_PIXELS", "MAX_SLOTS", "atomic_write_bytes", "atomic_write_text",
           "check_bound", "check_inside", "check_output_file", "file_mode", "folder_mode", "is_inside", "load_json",
           "load_yaml", "make_temp_folder", "parse_yaml", "publish_file", "read_bytes", "read_text", "replace_folder",
           "safe_name", "unwritable_reason", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` would give a new folder under the current umask."""
    return 0o777 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | None = None, writer=None, sync: bool = True) -> Path:
    """Write ``data`` (or whatever ``writer(fileobj)`` writes) to ``path`` atomically, umask mode.

    ``sync``: flush the file and its folder to disk before returning (off for the many small files of a
    folder that :func:`replace_folder` swaps in as a whole). The temp file (``.<name>.<random>.tmp``) is
    removed when the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if writer is not None:
                writer(fh)
            else:
                fh.write(data or b"")
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, sync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), sync=sync)


def publish_file(finished: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename the complete file ``finished`` (written in place under another name, e.g. a resumable
    conversion's ``.partial``) to ``target`` in one step."""
    os.replace(finished, target)
    _fsync_dir(Path(target).parent)
    return Path(target)


def make_temp_folder(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """A new, empty folder in ``parent`` (created with its parents) with the umask's mode (``mkdtemp`` makes
    0700), to be filled and then swapped in by :func:`replace_folder`."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(folder, folder_mode())
    return folder


def replace_folder(filled: Path, target: Path, set_modes: bool = False) -> Path:
    """Put the folder ``filled`` (made by :func:`make_temp_folder`) in the place of ``target`` by renames, so
    ``target`` is at every moment either the old folder or the new one. An existing ``target`` is moved
    aside first and deleted afterwards; an empty one is removed. ``set_modes``: give the files in ``filled``
    the umask's mode first (for files written by other libraries)."""
    import shutil

    filled, target = Path(filled), Path(target)
    if set_modes:
        for path in filled.iterdir():
            os.chmod(path, file_mode())
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(filled, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(filled, target)
    return target


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` (which may not exist yet) could not be created and written to, or None if it can.

    Probes with a real write in ``folder`` or its first existing parent (permission bits say nothing for
    root or read-only file systems) and creates nothing that stays.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return "exists and is not a directory"
    probe_dir = next((p for p in [folder, *folder.parents] if p.exists()), Path.cwd())
    if not probe_dir.is_dir():
        return f"cannot be created ({probe_dir} is not a directory)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".scenedecomp-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"is not writable ({probe_dir}: {err.strerror or err})"
    return None


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files left by a write that was killed midway (``.<name>.<random>.tmp``)."""
    removed = 0
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file in the same folder, then rename; mode from the umask).

    A target that cannot be written (a directory, a read-only place) raises :class:`RunError`, leaving
    no temp file behind."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: is a directory; give a .json file path")
    text = json.dumps(_nan_to_none(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise RunError(f"{path}: cannot write ({err.strerror or err})") from None


def _nan_to_none(value):
    """Strict JSON: NaN (a metric with no valid image) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
