"""Seed tables: train one preset for several seeds and summarise the spread.

Each seed is a separate ``scenedecomp train`` process (``--parallel`` at a time, each with
``--threads`` torch threads and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to match), so two seeds on a
2-core machine share nothing but the cores. Every run directory is ``<runs_dir>/seed<N>`` (its
``seed<N>.log`` beside it); the table itself goes to ``out``::

    <out>/seed<N>.json   the seed's test metrics (from the run's metrics.json), steps, seconds, command,
                         and whether it failed the criterion
    <out>/summary.json   per metric: mean, std (sample, n - 1), min, max, n; the criterion, the number of
                         failed seeds and which

With ``disentanglement`` each finished seed is also scored by ``scenedecomp evaluate RUN --disentanglement``
(same threads), and the probes' scalars join its metrics: ``probe_mlp_<factor>`` / ``probe_linear_<factor>``
(R², accuracy for categorical factors), ``dci_disentanglement``, ``dci_completeness``,
``dci_informativeness``, ``mig`` and ``matched_iou_mean``. ``collect`` trains nothing: it rebuilds the
table from run directories that exist (evaluating the probes where asked and still missing).

A seed *fails* when its criterion metric is below the threshold (default: ``count_accuracy < 0.9`` for
AIR, which predicts counts, and ``fg_ari < 0.5`` for the segmentation models) or when its training did
not finish (``status: error``; such seeds count as failed and have no metrics).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, load_config
from ..safeio import write_json

#: the default failure criterion per model name: (metric, threshold); a seed fails when metric < threshold
CRITERIA: dict[str, tuple[str, float]] = {"air": ("count_accuracy", 0.9)}
DEFAULT_CRITERION: tuple[str, float] = ("fg_ari", 0.5)
#: metrics.json keys not copied into the per-seed JSON (the probes' full result stays in the run's
#: metrics.json; its scalars are copied flat, see :func:`probe_scalars`)
_SKIP = {"split", "checkpoint", "eval_seconds", "precision", "disentanglement"}
#: metrics.json keys about one run's images (spreads, counts), not summarised across seeds
_WITHIN_RUN = ("_std", "_count", "num_slots")
#: keys the seed command sets itself; an override naming one is refused
_RESERVED = ("seed", "name", "out_dir")


def criterion_for(model_name: str) -> tuple[str, float]:
    """The default ``(metric, threshold)`` failure criterion of a model."""
    return CRITERIA.get(model_name, DEFAULT_CRITERION)


@dataclass
class SeedRun:
    """One seed's training process."""

    seed: int
    run_dir: Path
    log: Path
    command: list[str]


def seed_command(preset: str, seed: int, overrides: Sequence[str], runs_dir: Path, threads: int,
                 overwrite: bool = False) -> list[str]:
    """The ``scenedecomp train`` command line of one seed (this interpreter, the installed package)."""
    return [sys.executable, "-m", "scenedecomp.cli", "train", "--config", str(preset), "--quiet",
            *(["--overwrite"] if overwrite else []), *overrides, f"seed={seed}", f"out_dir={runs_dir}",
            f"name=seed{seed}", f"trainer.num_threads={threads}"]


def evaluate_command(run_dir: Path) -> list[str]:
    """The ``scenedecomp evaluate RUN --disentanglement`` command line of a finished seed."""
    return [sys.executable, "-m", "scenedecomp.cli", "evaluate", str(run_dir), "--disentanglement", "--quiet"]


def _run_one(job: SeedRun, threads: int, command: list[str] | None = None, append: bool = False) -> int:
    # the child imports the same scenedecomp as this process (a source checkout or the installed package):
    # the folder that holds the package (this file is scenedecomp/training/seeds.py)
    source = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": path}
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a" if append else "w") as log:
        return subprocess.run(command or job.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL, check=False).returncode


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()] \
        if path.is_file() else []
    return lines[-1] if lines else "no output"


def seed_record(job: SeedRun, returncode: int, preset: str, overrides: Sequence[str],
                criterion: tuple[str, float]) -> dict:
    """The per-seed JSON: metrics from the run's ``metrics.json`` and whether the seed failed."""
    metric, threshold = criterion
    record = {"preset": preset, "seed": job.seed, "overrides": list(overrides), "run": job.run_dir.name,
              "command": shlex.join(["scenedecomp", *(a if not a.startswith("out_dir=") else "out_dir=<runs_dir>"
                                                      for a in job.command[3:])]), "returncode": returncode,
              "criterion": f"{metric} < {threshold}"}
    metrics_file = job.run_dir / "metrics.json"
    if returncode != 0 or not metrics_file.is_file():
        return {**record, "status": "error", "error": _last_line(job.log), "failed": True}
    metrics = json.loads(metrics_file.read_text())
    metrics.update(probe_scalars(metrics.get("disentanglement")))
    kept = {k: v for k, v in metrics.items() if k not in _SKIP and not k.startswith("_")
            and (isinstance(v, int | float | dict) and not isinstance(v, bool) or v is None)}
    value = kept.get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return {**record, "status": "error", "error": f"metrics.json has no finite {metric}", "metrics": kept,
                "failed": True}
    return {**record, "status": "ok", "metrics": kept, "train_steps": kept.get("train_steps"),
            "train_seconds": kept.get("train_seconds"), "failed": bool(value < threshold)}


#: scalars of ``evaluate --disentanglement``'s result copied into a seed's metrics
_PROBE_SCALARS = ("dci_disentanglement", "dci_completeness", "dci_informativeness", "mig", "matched_iou_mean")


def probe_scalars(result: dict | None) -> dict[str, float]:
    """The per-factor probe scores and the DCI / MIG scalars of a ``disentanglement`` result, flat."""
    if not isinstance(result, dict):
        return {}
    flat = {k: result[k] for k in _PROBE_SCALARS if isinstance(result.get(k), int | float)}
    for reader, scores in (result.get("informativeness") or {}).items():
        flat.update({f"probe_{reader}_{factor}": v for factor, v in scores.items() if isinstance(v, int | float)})
    return flat


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def summarize(records: Sequence[dict], criterion: tuple[str, float]) -> dict:
    """Mean, sample std (n - 1; 0 for one seed), min, max and n of every scalar metric over the seeds that
    finished (not the per-image ``*_std`` / ``*_count`` of a run), and the failed seeds under ``criterion``."""
    metric, threshold = criterion
    finished = [r for r in records if r["status"] == "ok"]
    names = sorted({k for r in finished for k, v in r["metrics"].items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and not k.endswith(_WITHIN_RUN)})
    metrics = {}
    for name in names:
        values = [float(r["metrics"][name]) for r in finished if isinstance(r["metrics"].get(name), int | float)]
        values = [v for v in values if math.isfinite(v)]
        if values:
            metrics[name] = _stats(values)
    failed = [r["seed"] for r in records if r["failed"]]
    return {"preset": records[0]["preset"] if records else None,
            "overrides": records[0]["overrides"] if records else [],
            "seeds": [r["seed"] for r in records], "num_seeds": len(records),
            "criterion": f"{metric} < {threshold}", "criterion_metric": metric, "criterion_threshold": threshold,
            "num_failed": len(failed), "failed_seeds": failed,
            "errors": [r["seed"] for r in records if r["status"] == "error"],
            "std": "sample standard deviation (n - 1)", "metrics": metrics}


def run_seeds(preset: str, seeds: Sequence[int], out: str | os.PathLike, overrides: Sequence[str] = (),
              runs_dir: str | os.PathLike | None = None, parallel: int = 2, threads: int = 1,
              criterion: tuple[str, float] | None = None, overwrite: bool = False,
              report: Callable[[dict], None] | None = None, disentanglement: bool = False,
              collect: bool = False) -> dict:
    """Train ``preset`` once per seed (``parallel`` processes at a time) and write the seed table.

    The configuration of every seed is checked before anything runs (a bad override is one
    :class:`ConfigError` line). ``runs_dir`` (default ``<out>/runs``) holds the run directories.
    ``report`` is called with each seed's record as it finishes. ``disentanglement``: score each finished
    seed's latents with ``evaluate --disentanglement`` too. ``collect``: train nothing, rebuild the table
    from the existing run directories (a missing one is an error). Returns the summary.
    """
    overrides = list(overrides)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in _RESERVED:
            raise ConfigError(f"override {item!r}: the seed command sets {key} itself")
    if not seeds:
        raise ConfigError("seeds: none given")
    if parallel < 1 or threads < 1:
        raise ConfigError(f"parallel {parallel} / threads {threads}: both must be at least 1")
    out = Path(out).expanduser()
    runs = Path(runs_dir).expanduser() if runs_dir is not None else out / "runs"
    cfg = load_config(preset, [*overrides, f"seed={seeds[0]}"])
    criterion = criterion or criterion_for(cfg.model.name)
    jobs = [SeedRun(s, runs / f"seed{s}", runs / f"seed{s}.log",
                    seed_command(preset, s, overrides, runs, threads, overwrite)) for s in seeds]
    if collect:
        missing = [str(j.run_dir) for j in jobs if not j.run_dir.is_dir()]
        if missing:
            raise ConfigError(f"{missing[0]}: no such run directory to collect (train it first, without --collect)")
    elif not overwrite:
        taken = [str(j.run_dir) for j in jobs if j.run_dir.exists()]
        if taken:
            raise ConfigError(f"{taken[0]}: run directory already exists; pass --overwrite, --collect or "
                              "another --runs-dir")
    out.mkdir(parents=True, exist_ok=True)

    def work(job: SeedRun) -> dict:
        returncode = 0 if collect else _run_one(job, threads)
        if returncode == 0 and disentanglement and not _has_probes(job.run_dir):
            returncode = _run_one(job, threads, evaluate_command(job.run_dir), append=True)
        record = seed_record(job, returncode, preset, overrides, criterion)
        write_json(out / f"seed{job.seed}.json", record)
        if report is not None:
            report(record)
        return record

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        records = list(pool.map(work, jobs))
    summary = summarize(records, criterion)
    write_json(out / "summary.json", summary)
    return summary


def _has_probes(run_dir: Path) -> bool:
    try:
        return "disentanglement" in json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def format_record(record: dict) -> str:
    """One line for a finished seed."""
    if record["status"] != "ok":
        return f"seed {record['seed']}: error: {record['error']}"
    metric = record["criterion"].split(" ")[0]
    value = record["metrics"][metric]
    steps, seconds = record.get("train_steps"), record.get("train_seconds")
    time_part = f", {seconds / 60:.1f} min" if isinstance(seconds, int | float) else ""
    return (f"seed {record['seed']}: {metric} {value:.4f} ({steps} steps{time_part})"
            f"{'  FAILED (' + record['criterion'] + ')' if record['failed'] else ''}")


def format_summary(summary: dict) -> str:
    """The summary's headline: the criterion metric's mean +- std, min, max and the failed count."""
    metric = summary["criterion_metric"]
    stats = summary["metrics"].get(metric)
    head = (f"{metric} {stats['mean']:.4f} +- {stats['std']:.4f} (min {stats['min']:.4f}, max {stats['max']:.4f},"
            f" n {stats['n']})" if stats else f"{metric}: no finished seed")
    return (f"{summary['preset']}: {head}; failed {summary['num_failed']} of {summary['num_seeds']} "
            f"({summary['criterion']})")


# --- the `scenedecomp seeds` command -----------------------------------------------------------------


