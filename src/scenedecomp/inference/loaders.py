"""A run's data: its configured dataset splits and their DataLoaders."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import RunConfig
from ..data import DatasetError, open_dataset
from ..data.samplers import ResumableSampler, ShardSampler


def open_split(cfg: RunConfig, split: str) -> Dataset:
    """Open ``split`` of the configured dataset (``data.options`` are passed through)."""
    sizes = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}
    options = dict(cfg.data.options)
    options.setdefault("image_size", cfg.data.image_size)
    size = sizes.get(split, cfg.data.num_test)  # an extra split (e.g. multi_sprites OOD) takes the test size
    if size is not None:
        options["num_images"] = size
    try:
        return open_dataset(cfg.data.name, split=split, **options)
    except TypeError as err:  # an option the dataset does not take
        raise DatasetError(f"dataset {cfg.data.name!r}: {err}") from None


def make_loader(cfg: RunConfig, dataset: Dataset, train: bool) -> DataLoader:
    """Training: a :class:`~scenedecomp.data.samplers.ResumableSampler` (order a function of seed and epoch,
    so ``--resume`` continues mid-epoch). Both: their own generator for worker seeds, so no loader draws from the global
    RNG (a resumed run then continues the same random stream)."""
    batch = cfg.data.batch_size if train else (cfg.data.eval_batch_size or cfg.data.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    # our own samplers, sharded by rank under data parallelism (ShardSamplers; no DistributedSampler padding)
    sampler = ResumableSampler(len(dataset), cfg.seed, batch) if train else ShardSampler(len(dataset))
    workers = cfg.data.num_workers
    from ..hardware import inference_device

    # page-locked host memory when the run trains on a CUDA GPU: faster (asynchronous) copies to it
    pin = inference_device(cfg.trainer.accelerator).type == "cuda"
    return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=train and len(sampler) >= batch,
                      num_workers=workers, persistent_workers=workers > 0, generator=generator, pin_memory=pin)


def image_shape(dataset: Dataset, source: str) -> tuple[int, int]:
    if len(dataset) == 0:
        raise DatasetError(f"{source}: the dataset is empty")
    image = dataset[0]["image"]
    if image.shape[-1] != image.shape[-2]:
        raise DatasetError(f"{source}: images must be square, got {tuple(image.shape)}")
    return image.shape[0], image.shape[-1]
