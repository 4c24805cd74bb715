"""benchmarks/plot_curves.py: curves from run folders, written to JSON and drawn again from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _run(folder: Path, fg_ari: list[float]) -> Path:
    folder.mkdir()
    rows = [{"step": 100 * (i + 1), "seconds": 60.0 * (i + 1), "fg_ari": v, "msc": v / 2, "mse": 0.1 / (i + 1)}
            for i, v in enumerate(fg_ari)]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps({"fg_ari": fg_ari[-1], "train_steps": 100 * len(rows)}))
    return folder


def test_curves_round_trip_through_json(tmp_path, benchmark_script):
    main = benchmark_script("plot_curves")
    a, b = _run(tmp_path / "a", [0.1, 0.3]), _run(tmp_path / "b", [0.2, 0.25, 0.4])
    first = tmp_path / "first.json"
    assert main([str(a), str(b), "--labels", "A s0,A s1", "--out", str(tmp_path / "1.png"), "--json", str(first)]) == 0
    stored = json.loads(first.read_text())
    assert list(stored) == ["A s0", "A s1"]
    assert [r["fg_ari"] for r in stored["A s1"]["rows"]] == [0.2, 0.25, 0.4]
    assert stored["A s1"]["test"]["train_steps"] == 300

    c = _run(tmp_path / "c", [0.5])
    second = tmp_path / "second.json"
    assert main(["--from-json", str(first), str(c), "--labels", "C", "--out", str(tmp_path / "2.png"),
                 "--json", str(second)]) == 0
    again = json.loads(second.read_text())
    assert list(again) == ["A s0", "A s1", "C"] and again["A s0"] == stored["A s0"]
    assert (tmp_path / "2.png").stat().st_size > 0

    kept = tmp_path / "kept.json"
    assert main(["--from-json", str(second), "--keep", "C,A s1", "--out", str(tmp_path / "4.png"),
                 "--json", str(kept)]) == 0
    assert list(json.loads(kept.read_text())) == ["C", "A s1"]
    with pytest.raises(SystemExit, match="no run labelled 'B'"):
        main(["--from-json", str(second), "--keep", "B", "--out", str(tmp_path / "5.png")])
    with pytest.raises(SystemExit, match="already a run"):
        main(["--from-json", str(first), str(c), "--labels", "A s0", "--out", str(tmp_path / "3.png")])
