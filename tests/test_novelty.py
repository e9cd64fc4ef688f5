"""Novelty measures on hand-made nets and parameter banks with known answers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tina.evaluate.novelty import (
    GENERATED,
    nearest,
    noise_source,
    novelty_rows,
    novelty_table,
    perturb,
    predictions,
)
from tina.evaluate.records import NOVELTY_COLUMNS
from tina.nets import NetSpec, init_params, score
from tina.report.tables import check_novelty, novelty_markdown


def toy_data(k: int = 4, per_class: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k + 2).repeat_interleave(per_class)  # two classes outside the task
    images = torch.randint(0, 256, (len(labels), 3, 16, 16), generator=g, dtype=torch.uint8)
    return images, labels


def random_nets(n: int, spec: NetSpec, seed: int) -> torch.Tensor:
    return torch.stack(
        [init_params(spec, torch.Generator().manual_seed(seed + i)) for i in range(n)]
    )


def test_nearest_gives_l2_distance_and_cosine_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    queries = torch.tensor([[3.0, 0.0], [0.0, 1.5], [1.0, 1.0]])
    distance, cosine = nearest(queries, bank)
    assert distance.tolist() == pytest.approx([2.0, 0.5, 1.0])
    assert cosine.tolist() == pytest.approx([1.0, 1.0, 2**-0.5])


def test_perturb_scales_noise_by_each_parameters_std():
    params = torch.zeros(4000, 3)
    std = torch.tensor([0.0, 1.0, 10.0])
    noisy = perturb(params, std, 0.05, torch.Generator().manual_seed(0))
    assert torch.all(noisy[:, 0] == 0)
    assert noisy[:, 1].std().item() == pytest.approx(0.05, rel=0.05)
    assert noisy[:, 2].std().item() == pytest.approx(0.5, rel=0.05)
    again = perturb(params, std, 0.05, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_predictions_match_batched_evaluation_and_skip_padding():
    images, labels = toy_data()
    spec = NetSpec("cnn5k", 4, head_only=False)
    nets = random_nets(2, spec, seed=3)
    class_ids = [2, 0, 3]  # a 3-class task on a 4-slot net: slot 3 is padding
    nets[:, spec.head_rows()[3, -1]] = 1e6  # a padding row that would win every image
    pred, truth = predictions(nets, class_ids, images, labels, spec)
    assert pred.shape == (2, 15) and truth.tolist() == [1] * 5 + [0] * 5 + [2] * 5
    assert int(pred.max()) <= 2
    tasks = pd.DataFrame({"task_id": [0, 1], "class_ids": ["2 0 3", "2 0 3"]})
    expected = score(nets, tasks, images, labels, spec)
    accuracy = (pred == truth).float().mean(dim=1)
    assert torch.allclose(accuracy, expected)


def test_novelty_rows_of_a_copy_are_at_distance_zero_with_identical_errors():
    images, labels = toy_data()
    spec = NetSpec("cnn5k", 4, head_only=False)
    bank = random_nets(3, spec, seed=10)
    other = random_nets(1, spec, seed=50)
    nets = torch.cat([bank[1:2], other])
    rows = novelty_rows(
        GENERATED, [5, 6], [[0, 1, 2, 3], [3, 2, 1, 0]], nets, torch.cat([bank[1:2], bank[0:1]]),
        bank, images, labels, spec,
    )  # fmt: skip
    assert list(rows.columns[: len(NOVELTY_COLUMNS)]) == list(NOVELTY_COLUMNS)
    copy, new = rows.iloc[0], rows.iloc[1]
    assert copy["nearest_distance"] == pytest.approx(0.0, abs=1e-3)
    assert copy["nearest_cosine"] == pytest.approx(1.0)
    assert copy["wrong_iou"] == 1.0
    assert new["nearest_distance"] > 1.0 and new["nearest_cosine"] < 0.99
    assert rows["accuracy"].between(0, 1).all() and rows["task_id"].tolist() == [5, 6]
    check_novelty(rows)


def test_novelty_table_averages_per_source_generated_first():
    records = pd.DataFrame(
        {
            "task_id": [1, 2, 3, 4, 5],
            "source": [noise_source(0.05), GENERATED, GENERATED, noise_source(0.01), GENERATED],
            "accuracy": [0.5, 0.6, 0.8, 0.9, 0.7],
            "nearest_distance": [0.1, 2.0, 4.0, 0.02, 3.0],
            "nearest_cosine": [0.99, 0.9, 0.8, 1.0, 0.7],
            "wrong_iou": [0.8, 0.5, 0.3, 1.0, 0.4],
        }
    )
    table = novelty_table(records)
    assert table["source"].tolist() == ["generated", "noise_sigma=0.01", "noise_sigma=0.05"]
    generated = table.iloc[0]
    assert generated["models"] == 3 and generated["accuracy"] == pytest.approx(0.7)
    assert generated["nearest_distance"] == pytest.approx(3.0)
    assert generated["wrong_iou"] == pytest.approx(0.4)
    text = novelty_markdown(table)
    assert text.startswith("# Novelty") and "| generated" in text and "70" in text
