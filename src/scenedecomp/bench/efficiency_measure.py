"""Measuring one efficiency data point: FLOPs, parameters, training-step time and peak memory of MONet,
MONet-RN50 and RN50* at one K (:mod:`.efficiency` runs them over K; :mod:`.efficiency_report` summarises).

- **FLOPs** of one forward pass per image (batch of 1, eval mode, no grad), counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` separately for the attention module
  (``model.attention(image, K)``) and the component module (``component.encode`` on the K
  ``[image, log mask]`` inputs plus ``component.decode``). The counter counts matrix products and
  convolutions (2 FLOPs per multiply-add); elementwise ops, norms and the loss are not counted.
- **Parameters**: attention, component and total.
- **Training-step time**: one full MONet step (forward, loss, backward, RMSprop step) on the same random
  batch, in fp32 or under bf16 autocast (``precision``; ``auto`` = bf16 where the training default
  would use it), ``warmup`` untimed steps, then the median (and min / all) of ``repeats`` timed steps
  (``torch.cuda.synchronize`` around each on a GPU). All models for one K are built together and their
  timed steps interleaved (one step of each model per round), so load from other processes on a shared
  machine hits all models alike and the ratios stay meaningful; report the median.
- **Peak memory of a training step**. On CUDA: ``torch.cuda.max_memory_allocated`` over one step after
  ``reset_peak_memory_stats`` (tensor memory, as the thesis' GPU numbers). On CPU, where PyTorch keeps no
  allocator statistics: one extra step runs under ``torch.profiler`` with ``profile_memory=True``; its
  allocation/free events through PyTorch's CPU allocator are replayed in time order, and the peak of
  the running sum is added to the bytes alive at the start of the step (parameters, buffers, optimiser
  state and the batch, summed over unique storages; the previous step's gradients are released first,
  because the profiler cannot size the free of a block allocated before it started). This is the CPU
  analogue of ``max_memory_allocated``: tensor memory only, no allocator caching, no scratch memory
  that oneDNN allocates outside PyTorch's allocator, no Python/library overhead.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..config import load_config
from ..hardware import resolve_precision
from ..models import build_model

MODELS = ("monet", "monet_wide", "rn50", "rn50star")
DEFAULT_MODELS = ("monet", "rn50", "rn50star")
DEFAULT_SLOTS = (3, 5, 7, 11, 14, 18)
PRECISIONS = ("auto", "fp32", "bf16")


def model_overrides(model: str, image_size: int, backbone: str = "resnet50") -> list[str]:
    """Config overrides that select benchmark model ``model`` at ``image_size``."""
    deep = image_size >= 128  # 6 U-Net blocks at 128x128 (CLEVR), 5 at 64x64
    if model == "monet":
        channels = [32, 32, 32, 64, 64, 64] if deep else [32, 32, 64, 64, 64]
        return ["model.attention.type=unet_recurrent", f"model.attention.channels={channels}"]
    if model == "monet_wide":
        channels = [64, 128, 256, 512, 512, 512] if deep else [64, 128, 256, 512, 512]
        return ["model.attention.type=unet_recurrent", f"model.attention.channels={channels}"]
    if model in ("rn50", "rn50star"):
        kind = "resnet" if model == "rn50" else "resnet_skip"
        return [f"model.attention.type={kind}", f"model.attention.backbone={backbone}"]
    raise ValueError(f"unknown benchmark model {model!r}; expected one of {', '.join(MODELS)}")


def model_label(model: str, backbone: str = "resnet50") -> str:
    depth = backbone.removeprefix("resnet")
    return {
        "monet": "MONet",
        "monet_wide": "MONet (ngf=64 U-Net)",
        "rn50": f"MONet-RN{depth}",
        "rn50star": f"MONet-RN{depth}*",
    }[model]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], Any]) -> int:
    """Forward FLOPs of ``fn()`` (matmuls and convolutions, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def module_flops(model: nn.Module, image: Tensor, num_slots: int) -> dict[str, int]:
    """Per-image forward FLOPs of ``model.attention`` and ``model.component`` (batch of 1, eval mode)."""
    was_training = model.training
    model.eval()
    try:
        image = image[:1]
        _, c, h, w = image.shape
        attention_flops = count_flops(lambda: model.attention(image, num_slots))
        log_masks = model.attention(image, num_slots)
        k = log_masks.shape[1]
        flat_image = image.expand(k, c, h, w)
        flat_masks = log_masks.reshape(k, 1, h, w)

        def component() -> None:
            mean, _ = model.component.encode(flat_image, flat_masks)
            model.component.decode(mean)

        component_flops = count_flops(component)
        total_flops = count_flops(lambda: model(image, num_slots))
    finally:
        model.train(was_training)
    return {"attention": attention_flops, "component": component_flops, "model": total_flops}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _alive_bytes(tensors: list[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _static_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Tensor) -> list[Tensor]:
    tensors = [batch, *model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return tensors


def cpu_step_peak_memory(step: Callable[[], None], model: nn.Module, optimizer: torch.optim.Optimizer,
                         batch: Tensor) -> dict[str, int]:
    """Peak tensor bytes during ``step()`` on CPU: alive-at-start + peak of the profiler's alloc/free sum.

    The profiler reports the free of a block allocated before profiling started without its size, so
    such frees would be missed; the previous step's gradients (the only such tensors a step frees) are
    therefore released before the snapshot, and ``step()`` starts with no gradients, as it would anyway
    after its own ``zero_grad(set_to_none=True)``.
    """
    from torch.profiler import ProfilerActivity, profile

    optimizer.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    static = _alive_bytes(_static_tensors(model, optimizer, batch))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        running += event.nbytes()
        peak = max(peak, running)
    return {"peak_bytes": static + peak, "static_bytes": static, "step_peak_delta_bytes": peak}


def resolve_bench_precision(precision: str, device: torch.device) -> str:
    """``fp32`` / ``bf16`` as given; ``auto`` -> ``bf16`` where ``scenedecomp train`` would train MONet in
    bf16-mixed on ``device`` (a GPU with bf16, a CPU with AMX/AVX512-BF16), else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    accelerator = "cuda" if device.type == "cuda" else "cpu"
    return "bf16" if resolve_precision("auto", accelerator, "monet") == "bf16-mixed" else "fp32"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Entry:
    """One model built for one K, with its batch, optimiser and training step."""

    def __init__(self, model_name: str, num_slots: int, image_size: int, batch_size: int,
                 device: torch.device, backbone: str, seed: int, precision: str = "fp32"):
        overrides = model_overrides(model_name, image_size, backbone) + [
            f"model.num_slots={num_slots}", f"data.image_size={image_size}", f"data.batch_size={batch_size}",
        ]
        self.cfg = load_config(None, overrides)
        self.name = model_name
        self.num_slots = num_slots
        torch.manual_seed(seed)
        self.model = build_model(self.cfg.model, 3, image_size).to(device)
        generator = torch.Generator().manual_seed(seed)
        self.batch = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=1e-4)
        self.device = device
        self.bf16 = precision == "bf16"
        self.times: list[float] = []

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(self.batch, self.num_slots)
        out.loss.backward()
        self.optimizer.step()

    def timed_step(self) -> None:
        _sync(self.device)
        start = time.perf_counter()
        self.step()
        _sync(self.device)
        self.times.append(time.perf_counter() - start)

    def memory(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            _sync(self.device)
            return {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                    "method": "torch.cuda.max_memory_allocated over one training step"}
        try:
            mem: dict[str, Any] = cpu_step_peak_memory(self.step, self.model, self.optimizer, self.batch)
            mem["method"] = "torch.profiler CPU allocator events over one training step + alive tensors"
        except Exception as err:  # profiler internals changed: report, do not fail the benchmark
            mem = {"peak_bytes": None, "method": f"unavailable ({type(err).__name__}: {err})"}
        return mem


def benchmark_slots(model_names: Sequence[str], num_slots: int, image_size: int, batch_size: int,
                    repeats: int, device: torch.device, backbone: str = "resnet50", warmup: int = 2,
                    memory: bool = True, seed: int = 0, precision: str = "fp32") -> list[dict[str, Any]]:
    """All measurements for every model at one K.

    The timed steps are interleaved (one step of each model per round, ``repeats`` rounds) so that load
    from other processes on a shared machine affects all models alike and their ratio stays meaningful.
    """
    entries = [_Entry(m, num_slots, image_size, batch_size, device, backbone, seed, precision) for m in model_names]
    results = []
    for e in entries:
        results.append({
            "model": e.name,
            "label": model_label(e.name, backbone),
            "num_slots": num_slots,
            "attention_type": e.cfg.model.attention.type,
            "params": {
                "attention": count_params(e.model.attention),
                "component": count_params(e.model.component),
                "total": count_params(e.model),
            },
            "flops_per_image": module_flops(e.model, e.batch, num_slots),
        })
        e.model.train()
        for _ in range(warmup):
            e.step()
    for _ in range(repeats):
        for e in entries:
            e.timed_step()
    for e, r in zip(entries, results):
        r["step_time_s"] = {"median": statistics.median(e.times), "min": min(e.times), "all": e.times}
        if memory:
            r["memory"] = e.memory()
    return results


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env
