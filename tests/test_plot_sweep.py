import json

import pytest


def _run(folder, fg_ari, mig):
    folder.mkdir()
    mlp = {"x": 0.9, "scale": 0.5, "color[0]": 0.8, "color[1]": 0.6, "shape": 0.4}
    metrics = {"fg_ari": fg_ari, "msc": 0.8, "decoded_msc": 0.6, "train_steps": 10,
               "disentanglement": {"informativeness": {"mlp": mlp}, "dci_disentanglement": 0.4, "mig": mig,
                                   "mig_per_factor": {"x": mig * 2, "y": 0.0, "shape": 0.05}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_points_and_means_per_value(tmp_path, benchmark_script, capsys):
    main = benchmark_script("plot_sweep")
    a, b, c = _run(tmp_path / "a", 0.8, 0.1), _run(tmp_path / "b", 0.6, 0.3), _run(tmp_path / "c", 0.5, 0.2)
    out, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    assert main([f"{a}=0.5", f"{b}=0.5", f"{c}=4", "--param", "beta", "--out", str(out), "--json", str(js)]) == 0
    assert out.stat().st_size > 0
    points = json.loads(js.read_text())["points"]
    assert [p["value"] for p in points] == [0.5, 0.5, 4.0]
    assert points[1]["mig"] == 0.3 and points[0]["probe_colour"] == pytest.approx(0.7)
    capsys.readouterr()
    main([f"{a}=0.5", f"{b}=0.5", f"{c}=4", "--param", "beta", "--out", str(out), "--table"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[2].startswith("| 0.5 | 2 | 0.700 ± 0.141 |") and rows[3].startswith("| 4 | 1 | 0.500 |")
    main([f"{a}=0.5", f"{c}=4", "--param", "beta", "--out", str(out), "--mig-table"])
    rows = capsys.readouterr().out.strip().splitlines()
    # x, y, scale, r, g, b, shape, orientation; a factor without a score is left empty
    assert rows[2] == "| a | 0.5 | 0.100 | 0.20 | 0.00 |  |  |  |  | 0.05 |  |"
    assert rows[3] == "| c | 4 | 0.200 | 0.40 | 0.00 |  |  |  |  | 0.05 |  |"


def test_a_pair_without_a_number_is_refused(tmp_path, benchmark_script):
    main = benchmark_script("plot_sweep")
    with pytest.raises(SystemExit):
        main([str(_run(tmp_path / "a", 0.8, 0.1)), "--param", "beta", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="no disentanglement"):
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "metrics.json").write_text("{}")
        main([f"{tmp_path / 'b'}=1", "--param", "beta", "--out", str(tmp_path / "x.png")])
