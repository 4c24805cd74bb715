"""scenedecomp: unsupervised scene decomposition and object-centric representation learning.

MONet, MONet-RN50/RN50* and AIR; procedural and real multi-object datasets; segmentation, reconstruction,
counting and disentanglement metrics; figures and efficiency benchmarks.
"""

from .version import __version__

__all__ = ["__version__", "decompose", "load_pretrained"]


def decompose(images, run, **options):
    """Decompose ``images`` with a trained run; see :func:`scenedecomp.decomposition.decompose`."""
    from .decomposition import decompose as _decompose

    return _decompose(images, run, **options)


def load_pretrained(name):
    """``(module, config)`` of a shipped model (``"NAME"`` or ``"pretrained:NAME"``; see ``scenedecomp
    pretrained``) or of a model folder path, loaded from safetensors (no pickle), in eval mode.

    ``module(images)`` returns a :class:`~scenedecomp.models.output.ModelOutput`; ``module.model`` is the
    plain model; ``scenedecomp.decompose(images, module)`` decomposes with it."""
    import os

    from .training.checkpoint import find_run, load_module
    from .training.pretrained import PREFIX

    spec = os.fspath(name)
    if not spec.startswith(PREFIX) and os.sep not in spec and not os.path.isdir(spec):
        spec = PREFIX + spec
    _, weights, cfg = find_run(spec)
    return load_module(weights, cfg), cfg
