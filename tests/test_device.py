"""The device logic, tested on a CPU with the machine faked: precision for `auto` by GPU capability, the
accelerator's device for evaluation, pinned memory for CUDA runs, and the GPU check script's shape."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from scenedecomp import hardware
from scenedecomp.config import load_config
from scenedecomp.inference.loaders import make_loader

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("capability, expected", [((7, 0), "32-true"), ((7, 5), "32-true"), ((8, 0), "bf16-mixed"),
                                                  ((8, 9), "bf16-mixed"), ((9, 0), "bf16-mixed"),
                                                  ((10, 0), "bf16-mixed")])
def test_auto_precision_on_cuda_follows_the_capability(capability, expected):
    # V100 (7.0) and T4 (7.5) emulate bf16 (slower than fp32) though torch.cuda.is_bf16_supported() says True
    for accelerator in ("auto", "cuda", "gpu"):
        got = hardware.resolve_precision("auto", accelerator, "monet", cuda_available=True,
                                         cuda_capability=capability, cpu_bf16=False)
        assert got == expected, (accelerator, capability)
    assert hardware.resolve_precision("auto", "cuda", "air", cuda_available=True, cuda_capability=capability) \
        == "32-true", "AIR is not validated in bf16"
    assert hardware.resolve_precision("16-mixed", "cuda", "monet", cuda_available=True,
                                      cuda_capability=capability) == "16-mixed", "explicit values are kept"


def test_auto_precision_elsewhere():
    # a CPU run on a CUDA machine follows the CPU; no GPU present: the CPU decides under auto
    assert hardware.resolve_precision("auto", "cpu", "monet", cuda_available=True, cuda_capability=(9, 0),
                                      cpu_bf16=False) == "32-true"
    assert hardware.resolve_precision("auto", "auto", "monet", cuda_available=False, cpu_bf16=True) == "bf16-mixed"
    # a GPU asked for but absent: fp32 here, and Lightning refuses the accelerator with its own message
    assert hardware.resolve_precision("auto", "gpu", "monet", cuda_available=False, cpu_bf16=True) == "32-true"
    for accelerator in ("mps", "tpu"):
        assert hardware.resolve_precision("auto", accelerator, "monet", cuda_available=False, cpu_bf16=True) \
            == "32-true"


def test_capability_is_read_from_the_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert hardware.cuda_has_fast_bf16() and hardware.resolve_precision("auto", "auto", "monet") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert not hardware.cuda_has_fast_bf16() and hardware.resolve_precision("auto", "auto", "monet") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not hardware.cuda_has_fast_bf16()


def test_devices_for_evaluation():
    assert hardware.inference_device("auto", cuda_available=True).type == "cuda"
    assert hardware.inference_device("gpu", cuda_available=True).type == "cuda"
    assert hardware.inference_device("cpu", cuda_available=True).type == "cpu"
    assert hardware.inference_device("auto", cuda_available=False).type == "cpu"
    assert hardware.inference_device("gpu", cuda_available=False).type == "cpu"
    assert hardware.uses_cuda("gpu", cuda_available=False) and not hardware.uses_cuda("mps", cuda_available=True)


@pytest.mark.parametrize("accelerator, available, pinned", [("auto", True, True), ("cuda", True, True),
                                                            ("cpu", True, False), ("auto", False, False)])
def test_loaders_pin_memory_for_cuda_runs(monkeypatch, accelerator, available, pinned):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    cfg = load_config("monet-demo", [f"trainer.accelerator={accelerator}"])
    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 3))
    for train in (True, False):
        assert make_loader(cfg, dataset, train).pin_memory is pinned


def test_gpu_check_script_is_valid_bash_and_skips_without_cuda(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: run the script itself")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": str(Path(__import__("sys").executable)),
                                 "OUT": str(tmp_path)})
    assert result.returncode == 3 and "no CUDA device" in result.stderr, result.stderr


def test_devices_auto_is_one_gpu_unless_a_launcher_set_up_more():
    assert hardware.resolve_devices("auto", "auto", environ={}, cuda_available=True) == 1
    assert hardware.resolve_devices("auto", "gpu", environ={}, cuda_available=True) == 1
    assert hardware.resolve_devices("auto", "cpu", environ={}, cuda_available=True) == "auto"
    assert hardware.resolve_devices("auto", "auto", environ={}, cuda_available=False) == "auto"
    for launcher in ({"WORLD_SIZE": "8"}, {"SLURM_NTASKS": "16"}):
        assert hardware.resolve_devices("auto", "auto", environ=launcher, cuda_available=True) == "auto"
    assert hardware.resolve_devices("4", "auto", environ={}, cuda_available=True) == "4"
