"""scenedecomp: unsupervised scene decomposition and object-centric representation learning.

MONet, MONet-RN50/RN50* and AIR; procedural and real multi-object datasets; segmentation, reconstruction,
counting and disentanglement metrics; figures and efficiency benchmarks.
"""

__version__ = "0.1.0"
