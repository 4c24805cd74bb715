"""The tests' shared config overrides: a tiny MONet and tiny data, so every test trains the same small model
(each test adds the trainer settings it is about)."""

from __future__ import annotations

# MONet at its smallest (U-Net 8-8-8, component VAE 8-8 / 16 / 8, latent 4); K is the test's choice
TINY_MONET = ["model.latent_dim=4", "model.attention.channels=[8,8,8]", "model.attention.mlp_hidden=[16]",
              "model.component.encoder_channels=[8,8]", "model.component.encoder_hidden=16",
              "model.component.decoder_channels=8"]


def tiny_run(num_train: int, num_val: int = 8, num_test: int = 8, batch_size: int = 8, max_steps: int = 2,
             **trainer) -> list[str]:
    """Overrides for a tiny training run: 16x16 images, the split sizes given, :data:`TINY_MONET` with K=3,
    ``max_steps`` and any other ``trainer.<key>=<value>``."""
    return ["data.image_size=16", f"data.num_train={num_train}", f"data.num_val={num_val}",
            f"data.num_test={num_test}", f"data.batch_size={batch_size}", "model.num_slots=3", *TINY_MONET,
            f"trainer.max_steps={max_steps}", *(f"trainer.{key}={value}" for key, value in trainer.items())]
