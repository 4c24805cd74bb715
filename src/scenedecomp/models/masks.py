"""Turning attention logits into masks: stick-breaking in log space.

Shared by MONet's recurrent U-Net attention (which breaks the stick one logit at a time) and the one-pass
ResNet attention (:mod:`scenedecomp.models.resnet_attention`, which breaks it over all logits at once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def stick_breaking_log_masks(logits: Tensor) -> Tensor:
    """Turn ``K-1`` logits into ``K`` log masks by stick-breaking in log space.

    ``logits [B,K-1,1,H,W] -> log_masks [B,K,1,H,W]`` where
    ``log m_k = logsigmoid(a_k) + sum_{j<k} logsigmoid(-a_j)`` and the last mask is the remaining scope.
    """
    log_keep = F.logsigmoid(logits)  # log sigmoid(a_k): share of the scope taken by slot k
    log_pass = F.logsigmoid(-logits)  # log(1 - sigmoid(a_k)): share passed on
    log_scope = torch.cumsum(log_pass, dim=1)  # log s_k after k steps
    prev_scope = torch.cat([torch.zeros_like(log_scope[:, :1]), log_scope[:, :-1]], dim=1)
    return torch.cat([prev_scope + log_keep, log_scope[:, -1:]], dim=1)
