"""scenedecomp: unsupervised scene decomposition and object-centric representation learning.

MONet, MONet-RN50/RN50*, AIR and Slot Attention; procedural and real multi-object datasets; segmentation,
reconstruction, counting and disentanglement metrics; figures and efficiency benchmarks.

The public API (each imported on first use, so ``import scenedecomp`` stays light):

- :func:`load_config`: a preset name or YAML path plus ``key=value`` overrides -> a checked ``RunConfig``;
- :func:`open_dataset`: a registered dataset (or a path) and split -> a torch ``Dataset`` of batch dicts;
- :func:`build_model`: the ``model`` section of a config -> a plain ``nn.Module`` (a ``SceneModel``);
- :func:`load_run`: a run directory, checkpoint, model folder or ``pretrained:NAME`` -> a ``LoadedRun``
  (the model in eval mode, its config and geometry); ``run(images)`` returns a ``ModelOutput``;
- :func:`decompose`: images (tensors, arrays, files, folders) and a run -> per-slot masks, images and
  statistics.
"""

from .version import __version__

__all__ = ["__version__", "build_model", "decompose", "load_config", "load_pretrained", "load_run", "open_dataset"]


def load_config(config, overrides=()):
    """See :func:`scenedecomp.config.load_config`."""
    from .config import load_config as _load_config

    return _load_config(config, list(overrides))


def open_dataset(name, split="train", **options):
    """See :func:`scenedecomp.data.open_dataset`."""
    from .data import open_dataset as _open_dataset

    return _open_dataset(name, split=split, **options)


def build_model(model_config, in_channels=3, image_size=64):
    """See :func:`scenedecomp.models.build_model`."""
    from .models import build_model as _build_model

    return _build_model(model_config, in_channels, image_size)


def load_run(run):
    """A run directory, ``.ckpt`` file, model folder or ``pretrained:NAME`` (a bare name that is no path names
    a shipped model) as a :class:`~scenedecomp.inference.run.LoadedRun`, loaded as data only (no pickle runs),
    in eval mode."""
    import os

    from .inference.pretrained import PREFIX
    from .inference.run import load_run as _load_run

    spec = os.fspath(run)
    if not spec.startswith(PREFIX) and os.sep not in spec and not os.path.exists(spec):
        spec = PREFIX + spec  # a bare name: a shipped model
    return _load_run(spec)


def decompose(images, run, **options):
    """Decompose ``images`` with a trained run; see :func:`scenedecomp.inference.decompose.decompose`."""
    from .inference.decompose import decompose as _decompose

    return _decompose(images, run, **options)


def load_pretrained(name):
    """``(run, config)`` of a shipped model (``"NAME"`` or ``"pretrained:NAME"``; see ``scenedecomp pretrained``)
    or of a model folder: :func:`load_run` and its config. ``run(images)`` returns a ``ModelOutput``;
    ``run.model`` is the plain model; ``scenedecomp.decompose(images, run)`` decomposes with it."""
    run = load_run(name)
    return run, run.config
