"""What training, inference and the figures may ask of a model: :class:`SceneModel`.

Every model is a plain ``nn.Module`` whose ``forward(image [B,C,H,W], num_slots=None)`` returns a
:class:`~scenedecomp.models.output.ModelOutput`. The hooks below are part of the interface, so nothing
outside ``models/`` needs to sniff a model with ``hasattr``: :class:`SceneModelBase` gives each one its
plain default and a model overrides what it needs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from .output import ModelOutput


@runtime_checkable
class SceneModel(Protocol):
    """The interface of every model.

    - ``num_slots``: K the model was built with; ``adjustable_num_slots``: whether ``forward``'s
      ``num_slots`` may ask for another K at inference (False: only the trained K);
    - ``set_step(step)``: told the global training step before each training step (annealing, warm-ups);
    - ``parameter_groups(lr)``: the optimiser's parameter groups;
    - ``training_only_prefixes``: state-dict prefixes that only training uses (left out of model folders);
    - ``latent_decoder``: what decodes the latents for traversals and slot swaps: ``"slot_vae"`` (MONet's
      component VAE, ``model.component.decode`` on one slot's latent), ``"glimpse"`` (AIR's ``decode`` of a
      step's ``z_what``) or ``"none"``.
    """

    num_slots: int
    adjustable_num_slots: bool
    training_only_prefixes: tuple[str, ...]
    latent_decoder: str

    def __call__(self, image: Tensor, num_slots: int | None = None) -> ModelOutput: ...

    def set_step(self, step: int) -> None: ...

    def parameter_groups(self, lr: float) -> list[dict]: ...


class SceneModelBase(nn.Module):
    """The defaults of :class:`SceneModel`: K adjustable, no step hook, one parameter group, nothing
    training-only, no latent decoder. Holds no parameters or buffers (a model's state dict is its own)."""

    adjustable_num_slots: bool = True
    training_only_prefixes: tuple[str, ...] = ()
    latent_decoder: str = "none"

    def set_step(self, step: int) -> None:
        """Global training step; the default ignores it."""

    def parameter_groups(self, lr: float) -> list[dict]:
        """One group: every parameter that takes gradients, at the optimiser's ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]


def fixed_num_slots(model: SceneModel) -> int | None:
    """The K a built model must run with, or None when ``forward``'s ``num_slots`` may change it."""
    return None if model.adjustable_num_slots else model.num_slots
