"""``scenedecomp report RUN_DIR``: one self-contained ``report.html`` for a run.

Every image is inlined as a base64 PNG ``data:`` URI and the style sheet is inline; the page loads no
script, font or other resource, so it opens from disk with no server and no network. Sections (each
only when the run has the data):

- the run: model, dataset, steps and wall-clock; the resolved ``config.yaml`` and ``env.json``;
- metrics: one row per evaluated split (``metrics.json`` = test, ``metrics_<split>.json``);
- training health: the warnings of the validations' health checks (``history.jsonl``) and the last values;
- out-of-distribution: the ``ood_*`` splits with their FG-ARI / MSC change against the test split;
- curves: training loss terms and learning rate from the TensorBoard event files
  (``tensorboard``'s ``EventAccumulator``), validation metrics from ``history.jsonl``;
- figures: the decomposition (and AIR box) figures in ``figures/``;
- traversals: ``figures/traversal_*.png`` and ``components_*.png``; when there are none and the run has
  a checkpoint they are drawn first (``visualize --traversals`` for test image 0, top 8 dimensions);
- disentanglement: the scores in ``metrics.json`` and the importance matrix figures;
- efficiency: training steps/s from the metrics, and ``efficiency.json`` summaries found in the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
import time
from pathlib import Path

from ..errors import BadRun

METRIC_COLUMNS = ("num_images", "num_slots", "ari", "fg_ari", "msc", "sc", "mse", "decoded_ari", "decoded_fg_ari",
                  "decoded_msc", "generative_mse", "count_accuracy")


class ReportError(BadRun, ValueError):
    """The run directory cannot be reported on (one-line message)."""


# ----------------------------------------------------------------------------------------------- helpers
def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return _png_uri(buffer.getvalue())


def _img(uri: str, caption: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>")


def _file_img(path: Path, caption: str | None = None, log=None) -> str:
    """A figure of the run inlined; a symlink, a non-regular or an oversized file is left out (never read
    through: a run directory someone hands you must not pull your own files into the page)."""
    from ..errors import UserError
    from ..safeio import MAX_EMBED_BYTES, read_bytes

    try:
        data = read_bytes(path, MAX_EMBED_BYTES, "figure")
    except UserError as err:
        if log is not None:
            log(f"report: left out {err}")
        return ""
    return _img(_png_uri(data), caption or path.name)


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.2e}" if 0 < abs(value) < 1e-2 else f"{value:.4f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _read_json(path: Path) -> dict | None:
    """A JSON object from the run (bounded read, no symlink), or None when absent or unreadable."""
    from ..errors import UserError
    from ..safeio import load_json

    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = load_json(path)
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def _numbers_only(metrics: dict) -> dict:
    """Metric values the page computes with: a number or None (a hand-edited file may hold anything)."""
    keys = (*METRIC_COLUMNS, "train_seconds", "train_steps", "eval_seconds")
    return {k: (v if k not in keys or (isinstance(v, int | float) and not isinstance(v, bool)) else None)
            for k, v in metrics.items()}


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------------------------- data
def load_metrics(run_dir: Path) -> dict[str, dict]:
    """``{name: metrics}`` from ``metrics.json`` (``test``) and ``metrics_<name>.json``."""
    found: dict[str, dict] = {}
    for path in sorted(run_dir.glob("metrics*.json")):
        data = _read_json(path)
        if not isinstance(data, dict):
            continue
        data = _numbers_only(data)
        # keyed by file name (``evaluate --out metrics_ood_more_objects_k7.json`` keeps its own row)
        found["test" if path.name == "metrics.json" else path.stem[len("metrics_"):]] = data
    return found


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's TensorBoard event files: ``{tag: [(step, value), ...]}`` (steps sorted)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return {}
    scalars: dict[str, dict[int, float]] = {}
    folders = sorted({p.parent for p in run_dir.glob("tensorboard/**/events.out.tfevents.*")})
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
        try:
            acc.Reload()
        except Exception:  # a damaged event file: skip it, the report still renders
            continue
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value
    return {tag: sorted(values.items()) for tag, values in scalars.items()}


def _health_section(history: list[dict]) -> str:
    """"Training health": every warning of the validations' health checks (``health`` in history.jsonl,
    ``scenedecomp.metrics.health``) with the steps it was seen at, and the last validation's values."""
    rows = [row for row in history if isinstance(row.get("health"), dict)]
    if not rows:
        return ""
    seen: dict[str, list] = {}
    for row in rows:
        for warning in row["health"].get("warnings") or []:
            entry = seen.setdefault(str(warning.get("code")), [row.get("step"), row.get("step"), 0, ""])
            entry[1], entry[2], entry[3] = row.get("step"), entry[2] + 1, str(warning.get("message", ""))
    last = rows[-1]
    current = {str(w.get("code")) for w in last["health"].get("warnings") or []}
    if seen:
        table = _table(["warning", "first step", "last step", "validations", "at the last validation", "last message"],
                       [[code, first, final, count, code in current, message]
                        for code, (first, final, count, message) in seen.items()])
    else:
        table = f"<p>No warning in {len(rows)} validations.</p>"
    values = last["health"].get("values") or {}
    table += _table(["measured at the last validation (step " + str(last.get("step")) + ")", "value"],
                    [[k, v] for k, v in values.items()])
    return ("<h2>Training health</h2>" + table + "<p class='note'>Checks of collapse, unused slots, background "
            "split, decoded masks without layout and merged objects on the validation images; "
            "docs/troubleshooting.md explains each and what to try.</p>")


def _ensure_traversals(run_dir: Path, log) -> None:
    figures = run_dir / "figures"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return
    from .latent_figures import write_samples, write_traversals

    if not list(figures.glob("traversal_*.png")):
        try:
            write_traversals(run_dir, figures, split="test", image=None, top=8)
        except Exception as err:  # a report is still useful without them; say why once
            log(f"report: no traversal figures ({str(err).splitlines()[0][:160]})")
    if list(figures.glob("components_*.png")) and not (figures / "samples.png").is_file():
        try:
            write_samples(run_dir, figures, split="test")
        except Exception as err:
            log(f"report: no slot-swap figure ({str(err).splitlines()[0][:160]})")


def _read_history(run_dir: Path, log) -> list[dict]:
    """The rows of ``history.jsonl`` a figure can use (a numeric ``step``; numbers only, plus ``health``);
    damaged lines are skipped, an unreadable file is said once."""
    from ..errors import UserError
    from ..safeio import read_text

    history: list[dict] = []
    if not (run_dir / "history.jsonl").is_file():
        return history
    try:
        lines = read_text(run_dir / "history.jsonl", "validation history").splitlines()
    except UserError as err:
        log(f"report: no validation history ({err})")
        return history
    for line in lines:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int | float):  # rows the figure can use
            history.append({k: v for k, v in row.items()
                            if k == "step" or isinstance(v, int | float) and not isinstance(v, bool)})
            if isinstance(row.get("health"), dict):  # the health section escapes what it shows
                history[-1]["health"] = row["health"]
    return history


# ----------------------------------------------------------------------------------------------- sections
def _header_section(config: dict, run_dir: Path, test: dict) -> str:
    """The title: the run's name, model, data, K, training length and where the run is."""
    model = _section(config, "model").get("name", "?")
    data = _section(config, "data")
    name = str(config.get("name") or run_dir.name)[:200]
    slots = _section(config, "model").get("num_slots", "?")
    sub = [f"model <b>{html.escape(str(model)[:200])}</b>", f"data <b>{html.escape(str(data.get('name', '?'))[:200])}"
           f"</b> {html.escape(str(data.get('image_size', ''))[:20])}px", f"K = {html.escape(str(slots)[:20])}"]
    if isinstance(test.get("train_steps"), int | float) and isinstance(test.get("train_seconds", 0), int | float):
        sub.append(f"{test['train_steps']} steps in {test.get('train_seconds', 0) / 60:.1f} min")
    return (f"<h1>{html.escape(str(name))}</h1><p class='sub'>{' · '.join(sub)} · run directory "
            f"<code>{html.escape(str(run_dir.resolve()))}</code> · report written "
            f"{time.strftime('%Y-%m-%d %H:%M')}</p>")


def _metrics_section(metrics: dict[str, dict]) -> str:
    """"Metrics": one row per split."""
    if not metrics:
        return ""
    order = sorted(metrics, key=lambda s: (s.startswith("ood_"), {"test": 0, "val": 1, "train": 2}.get(s, 3), s))
    columns = [c for c in METRIC_COLUMNS if any(metrics[split].get(c) is not None for split in order)]
    rows = [[split, *[metrics[split].get(c) for c in columns]] for split in order]
    note = ("FG-ARI/ARI/MSC/SC are means over images (images without foreground skipped for the foreground "
            "metrics); MSE per pixel and channel.")
    if "decoded_msc" in columns or "generative_mse" in columns:
        note += (" <code>decoded_*</code>: the same segmentation metrics from the component VAE's decoded "
                 "masks (each slot's mask decoded from its latent alone); <code>generative_mse</code>: the "
                 "image rebuilt from the decoded masks. They show whether the latents carry where each "
                 "object is, not only what colour it has.")
    return "<h2>Metrics</h2>" + _table(["split", *columns], rows) + f"<p class='note'>{note}</p>"


def _ood_section(metrics: dict[str, dict], test: dict) -> str:
    """"Out-of-distribution splits": each OOD split's metrics and their change from the test split."""
    ood = [s for s in metrics if s.startswith("ood_")]
    if not ood:
        return ""
    rows = []
    for split in sorted(ood):
        m = metrics[split]
        row = [split, m.get("num_slots"), m.get("fg_ari"), m.get("msc"), m.get("mse")]
        for key in ("fg_ari", "msc"):
            a, b = m.get(key), test.get(key)
            row.append(a - b if isinstance(a, float) and isinstance(b, float) else None)
        rows.append(row)
    return "<h2>Out-of-distribution splits</h2>" + _table(
        ["split", "K", "FG-ARI", "MSC", "MSE", "ΔFG-ARI vs test", "ΔMSC vs test"], rows)


def _curves_section(history: list[dict], scalars: dict) -> str:
    """"Training curves": the loss terms and learning rate, and the validation metrics."""
    from ..viz.figures import loss_curves_figure, validation_figure

    curve_html = []
    fig = loss_curves_figure(scalars)
    if fig is not None:
        curve_html.append(_img(_figure_uri(fig), "training loss terms and learning rate (TensorBoard)"))
    fig = validation_figure(history, scalars)
    if fig is not None:
        source = "history.jsonl" if history else "TensorBoard"
        curve_html.append(_img(_figure_uri(fig), f"validation ({source})"))
    return "<h2>Training curves</h2>" + "".join(curve_html) if curve_html else ""


def _figures_section(figures: Path, log) -> str:
    """"Decompositions" and "Latent traversals and the component VAE": the run's figures, inlined."""
    html_parts = []
    decomposition = sorted(figures.glob("decomposition_*.png")) + sorted(figures.glob("boxes*.png"))
    if decomposition:
        html_parts.append("<h2>Decompositions (test images)</h2>"
                          + "".join(_file_img(p, log=log) for p in decomposition))
    trav = sorted(figures.glob("traversal_*.png")) + sorted(figures.glob("components_*.png")) \
        + sorted(figures.glob("samples.png"))
    if trav:
        html_parts.append("<h2>Latent traversals and the component VAE</h2>"
                          + "".join(_file_img(p, log=log) for p in trav))
    return "".join(html_parts)


def _disentanglement_section(metrics: dict[str, dict], figures: Path, log) -> str:
    """"Disentanglement": each scored split's summary, its per-factor scores and importance figure."""
    dis_rows, dis_imgs = [], []
    for split in sorted(metrics):
        d = metrics[split].get("disentanglement")
        if isinstance(d, dict):
            dis_rows.append([split, d.get("num_objects"), d.get("dci_disentanglement"), d.get("dci_completeness"),
                             d.get("dci_informativeness"), d.get("mig"), d.get("informativeness_linear"),
                             d.get("informativeness_mlp")])
            per_factor = d.get("informativeness") or {}
            names = d.get("factor_names") or list(d.get("factors") or {})
            if per_factor and names:
                probes = sorted(per_factor)
                factor_rows = [[n, *[per_factor[p].get(n) for p in probes], (d.get("mig_per_factor") or {}).get(n),
                                (d.get("dci_completeness_per_factor") or {}).get(n)] for n in names]
                dis_imgs.append(f"<details><summary>{html.escape(split)}: per factor</summary>" + _table(
                    ["factor", *[f"{p} probe" for p in probes], "MIG", "DCI completeness"], factor_rows)
                    + "</details>")
    dis_figs = sorted(figures.glob("disentanglement_*.png"))
    if not (dis_rows or dis_figs):
        return ""
    return ("<h2>Disentanglement</h2>" + (_table(
            ["split", "matched objects", "DCI D", "DCI C", "DCI I", "MIG", "linear probe", "MLP probe"], dis_rows)
            if dis_rows else "") + "".join(dis_imgs)
            + "<p class='note'>Slots matched to objects by Hungarian assignment on mask IoU; probes on held-out "
              "objects (R² continuous, accuracy categorical, averaged over factors).</p>"
            + "".join(_file_img(p, log=log) for p in dis_figs))


def _efficiency_section(test: dict, run_dir: Path) -> str:
    """"Efficiency": training and evaluation rates, and any efficiency benchmark summary in the run."""
    eff_rows = []
    if test.get("train_steps") and test.get("train_seconds"):
        eff_rows.append(["training", f"{test['train_steps'] / test['train_seconds']:.2f} steps/s",
                         f"{test['train_steps']} steps, {test['train_seconds']:.0f} s"])
    if test.get("eval_seconds") and test.get("num_images"):
        eff_rows.append(["evaluation", f"{test['num_images'] / test['eval_seconds']:.1f} images/s",
                         f"{test['num_images']} images, {test['eval_seconds']:.1f} s"])
    for path in sorted(run_dir.rglob("efficiency.json")):
        summary = (_read_json(path) or {}).get("summary")
        if summary:
            eff_rows.append([str(path.relative_to(run_dir)), "", json.dumps(summary)[:300]])
    return "<h2>Efficiency</h2>" + _table(["what", "rate", "detail"], eff_rows) if eff_rows else ""


def _config_section(env: dict, config_text: str | None) -> str:
    """"Configuration and environment": env.json (or a model folder's provenance) and config.yaml."""
    cfg_html = "<h2>Configuration and environment</h2>"
    if env:
        cfg_html += _table(["key", "value"], [[k, str(v)] for k, v in sorted(env.items())])
    if config_text:
        cfg_html += f"<details open><summary>config.yaml</summary><pre>{html.escape(config_text)}</pre></details>"
    return cfg_html


# ----------------------------------------------------------------------------------------------- page
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}figure img{max-width:100%;
border:1px solid #eee}figcaption{font-size:.8em;color:#555}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.8em;max-height:420px}
details{margin:8px 0}.note{color:#666;font-size:.85em}
"""


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, traversals: bool = True,
                 log=None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``) atomically; return it."""
    log = log or (lambda message: print(message, file=sys.stderr))
    from ..inference.pretrained import default_output, model_folder

    folder = model_folder(run_dir)  # a model folder or pretrained:NAME: the report goes to ./report_<NAME>.html
    if folder is not None:
        out = out or default_output(folder, "report", suffix=".html")
    run_dir = folder or Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    from ..errors import UserError
    from ..safeio import parse_yaml, read_text

    try:
        config_text = read_text(run_dir / "config.yaml", "config file") \
            if (run_dir / "config.yaml").is_file() or (run_dir / "config.yaml").is_symlink() else None
    except UserError as err:
        raise ReportError(str(err)) from None
    if config_text is None and not list(run_dir.glob("metrics*.json")):
        raise ReportError(f"{run_dir}: not a scenedecomp run directory (no config.yaml or metrics)")
    if out:
        from ..safeio import check_output_file

        target = check_output_file(out, "report", (".html", ".htm"))
    else:
        target = run_dir / "report.html"
    if target.is_dir():
        raise ReportError(f"{target}: is a directory; give a file path")
    if traversals:
        _ensure_traversals(run_dir, log)

    config = parse_yaml(config_text, str(run_dir / "config.yaml"), ReportError) if config_text else {}
    if not isinstance(config, dict):
        raise ReportError(f"{run_dir / 'config.yaml'}: the top level must be a mapping of settings")
    env = _read_json(run_dir / "env.json") or _read_json(run_dir / "provenance.json") or {}
    metrics = load_metrics(run_dir)
    test = metrics.get("test", {})
    history = _read_history(run_dir, log)
    scalars = tensorboard_scalars(run_dir)
    figures = run_dir / "figures"
    if figures.is_symlink():  # figures are read from the run itself only
        log(f"report: left out {figures}: a symbolic link; not followed")
        figures = run_dir / ".no-figures"
    name = str(config.get("name") or run_dir.name)[:200]
    parts = [_header_section(config, run_dir, test), _metrics_section(metrics), _health_section(history),
             _ood_section(metrics, test), _curves_section(history, scalars), _figures_section(figures, log),
             _disentanglement_section(metrics, figures, log), _efficiency_section(test, run_dir),
             _config_section(env, config_text)]
    parts = [part for part in parts if part]
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(str(name))} – scenedecomp report</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    from ..safeio import atomic_write_text

    return atomic_write_text(target, page)
