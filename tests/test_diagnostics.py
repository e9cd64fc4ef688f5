"""Residual probes of a zoo (tina.diagnostics) on a tiny rendered-emoji zoo."""

import pandas as pd
import pytest
import torch

from tina.data import prepare_dataset
from tina.diagnostics import overlap_residual, residual_probes
from tina.nets import NetSpec
from tina.tasks import task_classes
from tina.zoo.finetune import finetune_pmodels, select_classifier, train_generic
from tina.zoo.store import Generic, Zoo

N_CLASSES, K = 10, 4
SPEC = NetSpec("cnn5k", K)
ZOO = {"steps": 30, "lr": 0.02, "batch_size": 16, "chunk": 4, "augment": "color"}
TASKS = pd.DataFrame(
    {
        "task_id": range(5),
        "split": ["train", "train", "train", "val", "val"],
        "group": ["a", "b", "a", "a", "c"],  # group c has no training task
        "class_ids": [
            "0 1 2 3",
            "4 5 6 7",
            "0 2 8 9",
            "1 3 5 7",
            "2 6 8",
        ],  # last: one padding slot
    }
)


@pytest.fixture(scope="module")
def setup():
    data = prepare_dataset(
        "openmoji", max_classes=N_CLASSES, train_per_class=16, test_per_class=8, augment="mild",
        seed=0,
    )  # fmt: skip
    flat, _ = train_generic(
        data.train_images, data.train_labels, range(N_CLASSES), SPEC.with_classes(N_CLASSES),
        steps=40, lr=0.01, batch_size=32, seed=0, num_classes_total=N_CLASSES, progress=False,
    )  # fmt: skip
    generic = Generic(flat, SPEC.with_classes(N_CLASSES), torch.ones(N_CLASSES, dtype=torch.bool))
    params, meta = finetune_pmodels(
        data, TASKS, flat, SPEC, steps=ZOO["steps"], lr=ZOO["lr"], batch_size=ZOO["batch_size"],
        seed=0, chunk=ZOO["chunk"], progress=False, augment_mode=ZOO["augment"],
    )  # fmt: skip
    meta = TASKS.merge(meta, on="task_id")
    return data, generic, Zoo(params, task_classes(TASKS, K), meta, SPEC)


def test_probes_match_direct_scores_and_a_zero_residual_transfers_nothing(setup):
    data, generic, zoo = setup
    table = residual_probes(data, TASKS, generic, zoo, ZOO, seed=0, seeds=2).set_index("probe")
    assert list(table.index) == [
        "selection", "pmodel", "seed=1", "soup=2",
        "mean_residual x0.5", "group_residual x0.5", "overlap_residual x0.5",
        "mean_residual x1", "group_residual x1", "overlap_residual x1", "head_only",
    ]  # fmt: skip
    assert (table["count"] == 2).all()  # the two validation tasks only
    val = zoo.meta[zoo.meta["split"] == "val"]
    assert table.loc["pmodel", "accuracy"] == pytest.approx(val["acc_pmodel"].mean(), abs=1e-6)
    assert table.loc["selection", "accuracy"] == pytest.approx(val["acc_generic"].mean(), abs=1e-6)
    assert -1.0 <= table.loc["seed=1", "cosine"] <= 1.0 and table.loc["pmodel", "cosine"] == 1.0

    # training p-models equal to their base: every transferred residual is zero
    spec_all = generic.spec
    train = zoo.train_mask()
    flat = zoo.params.clone()
    flat[train] = torch.stack(
        [select_classifier(generic.flat, ids, spec_all, SPEC, 0) for ids in zoo.classes[train]]
    )
    still = residual_probes(
        data, TASKS, generic, Zoo(flat, zoo.classes, zoo.meta, SPEC), ZOO, seed=0, seeds=1
    ).set_index("probe")
    assert "seed=1" not in still.index and "soup=1" not in still.index
    for probe in ("mean_residual x1", "group_residual x0.5", "overlap_residual x1"):
        assert still.loc[probe, "accuracy"] == pytest.approx(still.loc["selection", "accuracy"])


def test_head_only_probe_keeps_the_generic_body(setup):
    data, generic, zoo = setup
    frozen = {**ZOO, "steps": 1, "lr": 0.0}
    table = residual_probes(data, TASKS, generic, zoo, frozen, seed=0, seeds=1).set_index("probe")
    # a learning rate of zero: the head-only nets are exactly classifier selection
    assert table.loc["head_only", "accuracy"] == pytest.approx(table.loc["selection", "accuracy"])


def test_probes_refuse_a_task_table_without_validation_tasks(setup):
    data, generic, zoo = setup
    with pytest.raises(ValueError, match="no validation tasks"):
        residual_probes(data, TASKS[TASKS["split"] == "train"], generic, zoo, ZOO, seed=0)


def test_a_head_only_zoo_is_probed_on_its_head_rows(setup):
    data, generic, _ = setup
    spec = SPEC.with_classes(K, head_only=True)
    params, meta = finetune_pmodels(
        data, TASKS, generic.flat, spec, steps=ZOO["steps"], lr=ZOO["lr"],
        batch_size=ZOO["batch_size"], seed=0, chunk=ZOO["chunk"], progress=False,
    )  # fmt: skip
    zoo = Zoo(params, task_classes(TASKS, K), TASKS.merge(meta, on="task_id"), spec)
    table = residual_probes(data, TASKS, generic, zoo, ZOO, seed=0, seeds=1).set_index("probe")
    assert "head_only" not in table.index
    val = zoo.meta[zoo.meta["split"] == "val"]
    assert table.loc["pmodel", "accuracy"] == pytest.approx(val["acc_pmodel"].mean(), abs=1e-6)


def test_overlap_residual_weights_tasks_by_shared_classes_and_rows_by_class():
    spec = NetSpec("cnn5k", 2)
    rows = spec.head_rows()
    train = torch.tensor([[0, 1], [1, 2], [3, -1]])
    residual = torch.randn(3, spec.num_params, generator=torch.Generator().manual_seed(0))
    out = overlap_residual(torch.tensor([[1, 0], [4, -1]]), train, residual, spec)
    body = torch.ones(spec.num_params, dtype=torch.bool)
    body[rows.reshape(-1)] = False
    # shares 2, 1 and 0 classes with the training tasks
    # float32 sums in another order (a matmul, index_add_): equal up to rounding
    close = {"rtol": 1e-5, "atol": 1e-6}
    assert torch.allclose(out[0, body], (2 * residual[0, body] + residual[1, body]) / 3, **close)
    assert torch.allclose(
        out[0, rows[0]], (residual[0, rows[1]] + residual[1, rows[0]]) / 2, **close
    )
    assert torch.allclose(out[0, rows[1]], residual[0, rows[0]], **close)
    assert (out[1] == 0).all()  # no shared class, and class 4 is in no training task
