"""scenedecomp: unsupervised scene decomposition and object-centric representation learning.

MONet, MONet-RN50/RN50* and AIR; procedural and real multi-object datasets; segmentation, reconstruction,
counting and disentanglement metrics; figures and efficiency benchmarks.
"""

from .version import __version__

__all__ = ["__version__", "decompose"]


def decompose(images, run, **options):
    """Decompose ``images`` with a trained run; see :func:`scenedecomp.decomposition.decompose`."""
    from .decomposition import decompose as _decompose

    return _decompose(images, run, **options)
