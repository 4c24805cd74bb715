"""What the machine can do fast, and the process settings that use it.

- :func:`cpu_has_fast_bf16`: the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16), so
  oneDNN runs bf16 convolutions and matmuls several times faster than fp32.
- :func:`cuda_has_fast_bf16`: the GPU has bf16 tensor cores (compute capability 8.0, Ampere, or newer);
  older GPUs run bf16 emulated, slower than fp32, although ``torch.cuda.is_bf16_supported()`` says True.
- :func:`resolve_precision`: turns ``trainer.precision: auto`` into a Lightning precision string.
- :func:`uses_cuda` / :func:`inference_device`: whether ``trainer.accelerator`` puts the run on a CUDA GPU
  (pinned host memory for its DataLoaders), and the device evaluation runs on.
- :func:`tune_malloc`: raises glibc's mmap and trim thresholds so large activation buffers are reused
  from the heap instead of being mmap'd, page-faulted and unmapped again at every step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "64")

# models whose numerics were validated under bf16 autocast (tests/test_precision.py); others get fp32
BF16_MODELS = ("monet", "slot_attention")

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
TOP_PAD_BYTES = 64 * 1024 * 1024


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (bf16 dot products in hardware)."""
    flags = cpu_flags()
    if flags:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    try:  # not Linux: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_fast_bf16(capability: tuple[int, int] | None = None) -> bool:
    """True when the CUDA device (``capability``, default: device 0's) has bf16 tensor cores (sm_80+)."""
    if capability is None:
        if not torch.cuda.is_available():
            return False
        capability = torch.cuda.get_device_capability(0)
    return tuple(capability) >= (8, 0)


def uses_cuda(accelerator: str, cuda_available: bool | None = None) -> bool:
    """True when ``trainer.accelerator`` runs on a CUDA GPU: ``cuda``/``gpu``, or ``auto`` with one present."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return accelerator in ("cuda", "gpu") or (accelerator == "auto" and available)


def inference_device(accelerator: str = "auto", cuda_available: bool | None = None) -> torch.device:
    """Where evaluation runs: the first CUDA device when the run's accelerator uses CUDA and one exists."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device("cuda" if available and uses_cuda(accelerator, available) else "cpu")


LAUNCHER_VARIABLES = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE")


def resolve_devices(devices: str, accelerator: str, environ=None, cuda_available: bool | None = None) -> str | int:
    """``trainer.devices: auto`` -> one GPU on a CUDA machine started by hand (Lightning's ``auto`` would take
    every GPU and silently multiply the batch, ``data.batch_size`` being per process); under torchrun or
    SLURM (their variables set) and on CPUs ``auto`` stays Lightning's. Other values are returned unchanged."""
    import os

    environ = os.environ if environ is None else environ
    if str(devices) != "auto" or any(environ.get(key) for key in LAUNCHER_VARIABLES):
        return devices
    return 1 if uses_cuda(accelerator, cuda_available) else devices


def resolve_precision(precision: str, accelerator: str, model_name: str, *, cuda_available: bool | None = None,
                      cuda_capability: tuple[int, int] | None = None, cpu_bf16: bool | None = None) -> str:
    """``auto`` -> ``bf16-mixed`` where bf16 is fast and validated for the model, else ``32-true``.

    On CUDA ``auto`` means bf16-mixed when the GPU has bf16 tensor cores (compute capability 8.0+); on a
    CPU, when it has AMX-BF16 or AVX512-BF16; ``mps`` and ``tpu`` get fp32. Any other value is returned
    unchanged. The keyword arguments stand in for the machine (tests): CUDA present, its capability, the
    CPU's bf16 support.
    """
    if precision != "auto":
        return precision
    if model_name not in BF16_MODELS or accelerator in ("mps", "tpu"):
        return "32-true"
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if uses_cuda(accelerator, available):
        if not available:
            return "32-true"  # Lightning refuses the accelerator itself, with its own message
        return "bf16-mixed" if cuda_has_fast_bf16(cuda_capability) else "32-true"
    fast = cpu_has_fast_bf16() if cpu_bf16 is None else cpu_bf16
    return "bf16-mixed" if fast else "32-true"


@functools.cache
def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds for this process; True if glibc accepted them.

    The same effect as starting Python with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set,
    applied from inside the process (it affects allocations made after the call). A no-op returning
    False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    ok &= mallopt(_M_TOP_PAD, TOP_PAD_BYTES) == 1
    return bool(ok)


def git_commit() -> str:
    """The package's git commit (``-dirty`` with uncommitted changes), or ``unknown`` outside a checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def environment(cfg) -> dict:
    """What a run records in ``env.json``: versions, git commit, command line, seed (``cfg.seed``), machine."""
    import lightning
    import numpy
    import torchvision

    from .version import __version__

    return {
        "scenedecomp": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join(sys.argv),
        "seed": cfg.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
