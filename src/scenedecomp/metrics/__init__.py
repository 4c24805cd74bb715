"""Evaluation metrics: ARI / FG-ARI, segmentation covering (MSC / SC), MSE, count accuracy.

Every metric is returned per image (a float64 tensor ``[B]``); NaN marks images where a metric is
undefined, and :func:`summarize` aggregates with a nan-mean.
"""

from scenedecomp.metrics.counting import count_accuracy, count_accuracy_by_count, summarize
from scenedecomp.metrics.reconstruction import mse
from scenedecomp.metrics.segmentation import (
    ari,
    labels_from_masks,
    segmentation_covering,
    segmentation_metrics,
)

__all__ = [
    "ari",
    "count_accuracy",
    "count_accuracy_by_count",
    "labels_from_masks",
    "mse",
    "segmentation_covering",
    "segmentation_metrics",
    "summarize",
]
