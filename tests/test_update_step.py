import json

from scenedecomp.config import load_config
from scenedecomp.models import build_model


def test_update_step_benchmark_times_every_piece_of_the_update(tmp_path, benchmark_script, capsys):
    out = tmp_path / "update.json"
    assert benchmark_script("update_step")(["monet-demo", "--repeats", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    row = json.loads(out.read_text())["presets"]["monet-demo"]
    cfg = load_config("monet-demo")
    assert row["parameters"] == sum(p.numel() for p in build_model(cfg.model, 3, cfg.data.image_size).parameters())
    assert set(row["ms_median"]) == {"adam_per_tensor", "adam_fused", "clip_grad_norm", "finite_check_per_tensor",
                                     "finite_check_total_norm", "weight_average_per_tensor",
                                     "weight_average_foreach"}
    assert all(ms > 0 for ms in row["ms_median"].values())
    assert row["after_ms"] < row["before_ms"]
    assert row["adam_fused_speedup"] == round(row["ms_median"]["adam_per_tensor"] / row["ms_median"]["adam_fused"], 2)
