"""Accuracy, agreement and similarity measures used by evaluation, novelty and reporting.

Every function accepts numpy arrays, torch tensors or plain sequences and returns Python
floats or numpy arrays, so the evaluation code and the report can share them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

#: Most float64 elements held at once by :func:`nearest_neighbour` per block (about 128 MB).
_BLOCK_ELEMENTS = 1 << 24


class Summary(NamedTuple):
    """Summary statistics of a set of values (NaN values are left out)."""

    mean: float
    std: float
    count: int
    median: float
    best: float


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _predictions(pred, labels) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and labels as equal-length 1-D arrays; logits ``[n, k]`` are arg-maxed."""
    pred, labels = _as_numpy(pred), _as_numpy(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {labels.shape}")
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.shape != labels.shape:
        raise ValueError(
            f"predictions {pred.shape} and labels {labels.shape} differ in shape; pass one "
            "predicted class (or one row of logits) per label"
        )
    if labels.size == 0:
        raise ValueError("cannot score an empty set of predictions: pass at least one label")
    return pred, labels


def accuracy(pred, labels) -> float:
    """Fraction of ``labels`` that ``pred`` gets right, in [0, 1].

    ``pred`` holds one predicted class per label, or logits of shape ``[n, k]`` (arg-maxed).
    """
    pred, labels = _predictions(pred, labels)
    return float(np.mean(pred == labels))


def wrong_iou(pred_a, pred_b, labels) -> float:
    """Intersection over union of the sets of examples that two models misclassify.

    1 means both models fail on exactly the same examples (a sign that one copies the other),
    0 means their mistakes are disjoint. When neither model makes a mistake, both sets are empty
    and therefore equal, so the IoU is defined as 1.0.
    """
    pred_a, labels_a = _predictions(pred_a, labels)
    pred_b, _ = _predictions(pred_b, labels)
    wrong_a, wrong_b = pred_a != labels_a, pred_b != labels_a
    union = int(np.sum(wrong_a | wrong_b))
    if union == 0:
        return 1.0
    return float(np.sum(wrong_a & wrong_b) / union)


def _as_matrix(values, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(np.asarray(values))
    if values.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix [rows, parameters], got {tuple(values.shape)}"
        )
    if values.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    return values.detach().cpu()


def _unit_rows(block: torch.Tensor, name: str) -> torch.Tensor:
    norms = block.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{name} holds an all-zero row, which has no cosine direction")
    return block / norms


def _block_distances(queries: torch.Tensor, bank: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances ``[len(queries), len(bank)]`` between two float64 blocks."""
    if metric == "cosine":
        similarity = _unit_rows(queries, "queries") @ _unit_rows(bank, "bank").T
        return 1.0 - similarity
    squared = (
        queries.square().sum(1, keepdim=True) + bank.square().sum(1) - 2.0 * (queries @ bank.T)
    )
    return squared.clamp_min(0.0).sqrt()


def nearest_neighbour(queries, bank, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``queries`` ``[n, P]``, the nearest row of ``bank`` ``[m, P]``.

    ``metric`` is ``"l2"`` (Euclidean distance) or ``"cosine"`` (cosine distance, that is
    1 - cosine similarity, in [0, 2]). Returns ``(index, distance)``: int64 indices into ``bank``
    and float64 distances, both of length ``n``; ties go to the lowest index. Work is done in
    float64 blocks, so large banks of flattened network parameters fit in memory.
    """
    if metric not in ("l2", "cosine"):
        raise ValueError(f"unknown metric {metric!r}: use 'l2' or 'cosine'")
    queries, bank = _as_matrix(queries, "queries"), _as_matrix(bank, "bank")
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} parameters but the bank has {bank.shape[1]}: "
            "flatten both the same way"
        )
    rows = max(1, _BLOCK_ELEMENTS // queries.shape[1])
    best_index = torch.zeros(len(queries), dtype=torch.int64)
    best_distance = torch.full((len(queries),), math.inf, dtype=torch.float64)
    for q_start in range(0, len(queries), rows):
        q_block = queries[q_start : q_start + rows].double()
        for b_start in range(0, len(bank), rows):
            distances = _block_distances(q_block, bank[b_start : b_start + rows].double(), metric)
            value, index = distances.min(dim=1)
            current = best_distance[q_start : q_start + rows]
            better = value < current
            current[better] = value[better]
            best_index[q_start : q_start + rows][better] = index[better] + b_start
    return best_index.numpy(), best_distance.numpy()


def summarise(values) -> Summary:
    """Mean, sample std (ddof=1; NaN for fewer than two values), count, median and best (max).

    NaN values are left out; with no values left, every statistic is NaN and the count is 0.
    """
    array = _as_numpy(values).astype(np.float64).ravel()
    array = array[~np.isnan(array)]
    if array.size == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return Summary(
        mean=float(np.mean(array)),
        std=std,
        count=int(array.size),
        median=float(np.median(array)),
        best=float(np.max(array)),
    )


def chance(k: int) -> float:
    """Expected accuracy of uniform random guessing among ``k`` classes, ``1 / k``."""
    if int(k) != k or k < 1:
        raise ValueError(f"chance needs a positive whole number of classes, got k={k}")
    return 1.0 / int(k)


def majority_accuracy(labels, train_labels=None) -> float:
    """Accuracy of always predicting one class.

    The predicted class is the most frequent class of ``train_labels`` when given, else of
    ``labels`` themselves (the best constant predictor); ties go to the smallest class index.
    """
    labels = _as_numpy(labels).ravel()
    if labels.size == 0:
        raise ValueError("cannot score a majority predictor on an empty set of labels")
    source = labels if train_labels is None else _as_numpy(train_labels).ravel()
    if source.size == 0:
        raise ValueError("train_labels is empty: the majority class is undefined")
    classes, counts = np.unique(source, return_counts=True)
    majority = classes[np.argmax(counts)]
    return float(np.mean(labels == majority))
