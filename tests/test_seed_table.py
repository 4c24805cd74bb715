"""benchmarks/seed_table.py: markdown rows from the summaries `scenedecomp seeds` writes."""

from __future__ import annotations

import json

from scenedecomp.training.seeds import summarize


def test_rows_give_mean_and_std_steps_and_failed_seeds(tmp_path, capsys, benchmark_script):
    records = [{"preset": "p", "overrides": [], "seed": s, "status": "ok", "failed": v < 0.5,
                "metrics": {"fg_ari": v, "mse": m, "train_steps": n}}
               for s, (v, m, n) in enumerate([(0.9, 0.001, 1000), (0.3, 0.003, 2000)])]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summarize(records, ("fg_ari", 0.5))))
    assert benchmark_script("seed_table")([str(path), "--metrics", "fg_ari,mse", "--labels", "Model A"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | fg_ari | mse | steps | seeds | failed |"
    # mean 0.6, sample std 0.424; mse 0.002 +- 0.00141; 1,500 steps; one of two seeds below 0.5
    assert lines[2] == "| Model A | 0.600 ± 0.424 | 0.00200 ± 0.00141 | 1,500 | 2 | 1 (fg_ari < 0.5) |"
    assert benchmark_script("seed_table")([str(path), "--labels", "A,B"]) == 2
