"""Metrics on hand-made predictions whose answers are known."""

import math

import numpy as np
import pytest
import torch

from tina.metrics import (
    accuracy,
    chance,
    majority_accuracy,
    nearest_neighbour,
    summarise,
    wrong_iou,
)


def test_accuracy_counts_correct_predictions():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.75)
    assert accuracy(torch.tensor([3, 3]), np.array([3, 3])) == 1.0
    assert accuracy([1, 1, 1], [0, 0, 2]) == 0.0


def test_accuracy_argmaxes_logits():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5]])
    assert accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)


def test_accuracy_rejects_mismatched_and_empty_input():
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_wrong_iou_of_overlapping_mistakes():
    labels = [0, 1, 2, 3, 4, 5]
    pred_a = [9, 9, 2, 3, 4, 5]  # wrong on {0, 1}
    pred_b = [9, 1, 9, 3, 4, 5]  # wrong on {0, 2}
    assert wrong_iou(pred_a, pred_b, labels) == pytest.approx(1 / 3)
    assert wrong_iou(pred_a, pred_a, labels) == 1.0


def test_wrong_iou_disjoint_and_empty_cases():
    labels = [0, 1, 2, 3]
    assert wrong_iou([9, 1, 2, 3], [0, 9, 2, 3], labels) == 0.0
    # Neither model errs: both mistake sets are empty, hence equal, so IoU is 1.
    assert wrong_iou(labels, labels, labels) == 1.0
    # Only one model errs: the intersection is empty.
    assert wrong_iou([9, 1, 2, 3], labels, labels) == 0.0


def test_nearest_neighbour_l2():
    bank = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    queries = np.array([[2.9, 4.1], [0.1, 0.0], [9.0, 0.0]])
    index, distance = nearest_neighbour(queries, bank, metric="l2")
    assert index.tolist() == [1, 0, 2]
    assert distance == pytest.approx([math.hypot(0.1, 0.1), 0.1, 1.0], abs=1e-12)
    assert index.dtype == np.int64 and distance.dtype == np.float64


def test_nearest_neighbour_cosine_ignores_scale():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    queries = torch.tensor([[5.0, 0.1], [0.0, -2.0], [3.0, 3.0]])
    index, distance = nearest_neighbour(queries, bank, metric="cosine")
    assert index.tolist() == [0, 0, 2]
    expected_first = 1.0 - 5.0 / math.hypot(5.0, 0.1)
    assert distance == pytest.approx([expected_first, 1.0, 0.0], abs=1e-7)


def test_nearest_neighbour_blocks_match_one_pass(monkeypatch):
    generator = np.random.default_rng(0)
    bank, queries = generator.normal(size=(37, 5)), generator.normal(size=(11, 5))
    expected = np.linalg.norm(queries[:, None] - bank[None], axis=2)
    monkeypatch.setattr("tina.metrics._BLOCK_ELEMENTS", 20)  # blocks of 4 rows
    index, distance = nearest_neighbour(queries, bank)
    assert index.tolist() == expected.argmin(axis=1).tolist()
    assert distance == pytest.approx(expected.min(axis=1), abs=1e-10)


def test_nearest_neighbour_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        nearest_neighbour([[1.0]], [[1.0]], metric="manhattan")
    with pytest.raises(ValueError, match="3 parameters but the bank has 2"):
        nearest_neighbour([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="all-zero row"):
        nearest_neighbour([[1.0, 2.0]], [[0.0, 0.0]], metric="cosine")


def test_summarise_three_values():
    summary = summarise([0.2, 0.5, 0.8])
    assert summary.mean == pytest.approx(0.5)
    assert summary.std == pytest.approx(0.3)  # ddof=1: sqrt((0.09 + 0 + 0.09) / 2)
    assert summary.count == 3
    assert summary.median == pytest.approx(0.5)
    assert summary.best == pytest.approx(0.8)


def test_summarise_one_value_and_nan():
    summary = summarise([0.4])
    assert (summary.mean, summary.count, summary.median, summary.best) == (0.4, 1, 0.4, 0.4)
    assert math.isnan(summary.std)
    assert summarise([0.4, math.nan]).count == 1
    assert summarise([]).count == 0 and math.isnan(summarise([]).mean)


def test_chance_and_majority():
    assert chance(4) == 0.25
    with pytest.raises(ValueError, match="positive whole number"):
        chance(0)
    labels = [0, 0, 0, 1, 2]
    assert majority_accuracy(labels) == pytest.approx(0.6)
    assert majority_accuracy(labels, train_labels=[2, 2, 1]) == pytest.approx(0.2)
    assert majority_accuracy([1, 0]) == 0.5  # tie: smallest class
