"""scenedecomp: unsupervised scene decomposition and object-centric representation learning.

MONet, MONet-RN50/RN50* and AIR; procedural and real multi-object datasets; segmentation, reconstruction,
counting and disentanglement metrics; figures and efficiency benchmarks.
"""

__version__ = "0.1.0"


def decompose(images, run, **options):
    """Decompose ``images`` with a trained run; see :func:`scenedecomp.decomposition.decompose`."""
    from .decomposition import decompose as _decompose

    return _decompose(images, run, **options)
