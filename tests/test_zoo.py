"""Generic model, classifier selection and batched p-model fine-tuning on rendered emoji."""

import pandas as pd
import pytest
import torch

from tina.data import prepare_dataset
from tina.nets import NetSpec, score, unflatten
from tina.tasks import PAD, task_classes
from tina.zoo.finetune import (
    augment,
    draw_augment,
    finetune_pmodels,
    select_classifier,
    train_generic,
)

N_CLASSES, SEEN = 20, list(range(16))
SPEC = NetSpec("cnn5k", 10)
SPEC_ALL = SPEC.with_classes(N_CLASSES)
TASKS = pd.DataFrame(
    {
        "task_id": [3, 7, 11, 12],
        "class_ids": [
            "0 1 2 3 4 5 6 7 8 9",
            "15 14 13 12 11 10 9 8 7 6",
            "2 4 6 8 10 12 14 1 3 5",
            "16 17 0 5 9",  # two unseen classes and five padding slots
        ],
    }
)
FINETUNE = {"steps": 60, "lr": 0.02, "batch_size": 32, "seed": 5, "progress": False}


@pytest.fixture(scope="module")
def dataset():
    return prepare_dataset(
        "openmoji",
        max_classes=N_CLASSES,
        train_per_class=40,
        test_per_class=20,
        augment="mild",
        seed=0,
    )


@pytest.fixture(scope="module")
def generic(dataset):
    flat, report = train_generic(
        dataset.train_images,
        dataset.train_labels,
        SEEN,
        SPEC_ALL,
        steps=150,
        lr=0.01,
        batch_size=64,
        seed=0,
        num_classes_total=N_CLASSES,
        test_images=dataset.test_images,
        test_labels=dataset.test_labels,
        progress=False,
    )
    return flat, report


@pytest.fixture(scope="module")
def zoo(dataset, generic):
    return finetune_pmodels(dataset, TASKS, generic[0], SPEC, chunk=4, **FINETUNE)


def test_generic_learns_seen_classes_and_keeps_unseen_rows_at_init(generic):
    flat, report = generic
    assert report["steps"] == 150 and report["num_classes"] == len(SEEN)
    assert report["test_acc"] > 3 / len(SEEN)  # well above chance on held-out images
    assert len(report["loss_curve"]) == 20
    assert report["loss_curve"][-1] < report["loss_curve"][0] - 0.5
    rows = SPEC_ALL.head_rows()
    again, _ = train_generic(
        torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
        [0, 1],
        SPEC_ALL,
        steps=2,
        lr=0.01,
        batch_size=2,
        seed=0,
        num_classes_total=N_CLASSES,
        progress=False,
    )
    # rows of classes outside class_ids are the seeded init whatever the data, trained rows not
    assert torch.equal(again[rows[len(SEEN) :]], flat[rows[len(SEEN) :]])
    assert not torch.equal(again[rows[2 : len(SEEN)]], flat[rows[2 : len(SEEN)]])


def test_select_classifier_takes_rows_in_prompt_order_and_seeds_padding():
    generic = torch.randn(SPEC_ALL.num_params, generator=torch.Generator().manual_seed(0))
    rows = SPEC_ALL.head_rows()
    classes = [7, 2, 19, 0, PAD, 5, 1, PAD, 3, 4]
    net = select_classifier(generic, classes, SPEC_ALL, SPEC, seed=1)
    assert net.shape == (SPEC.num_params,)
    assert torch.equal(net[: SPEC.body_size], generic[: SPEC.body_size])
    task_rows = SPEC.head_rows()
    for slot, class_id in enumerate(classes):
        if class_id != PAD:
            assert torch.equal(net[task_rows[slot]], generic[rows[class_id]])
    padding = net[task_rows[[4, 7]]]
    assert not torch.equal(padding[0], padding[1])
    assert padding.abs().max() <= 1 / 32**0.5  # drawn like a fresh head row
    same = select_classifier(generic, classes, SPEC_ALL, SPEC, seed=1)
    other = select_classifier(generic, classes, SPEC_ALL, SPEC, seed=2)
    assert torch.equal(same, net)
    assert not torch.equal(other[task_rows[4]], padding[0])
    assert torch.equal(other[task_rows[0]], net[task_rows[0]])  # class rows do not depend on it
    head_only = select_classifier(generic, classes, SPEC_ALL, SPEC.with_classes(10, True), seed=1)
    assert torch.equal(head_only, net[SPEC.body_size :])
    with pytest.raises(ValueError, match="need 10 ids"):
        select_classifier(generic, classes[:9], SPEC_ALL, SPEC, seed=1)
    with pytest.raises(ValueError, match="outside 0..19"):
        select_classifier(generic, [20] + classes[1:], SPEC_ALL, SPEC, seed=1)


def test_zoo_outputs_are_complete_and_beat_classifier_selection(dataset, generic, zoo):
    params, meta = zoo
    assert params.shape == (4, SPEC.num_params) and params.dtype == torch.float32
    assert list(meta.columns) == ["task_id", "acc_pmodel", "acc_generic", "seconds_per_model"]
    assert meta["task_id"].tolist() == [3, 7, 11, 12]
    assert meta[["acc_pmodel", "acc_generic"]].stack().between(0, 1).all()
    assert (meta["seconds_per_model"] > 0).all()
    assert meta["acc_pmodel"].mean() > meta["acc_generic"].mean() + 0.05
    # the task with unseen classes gains most: the generic never trained those rows
    assert meta["acc_pmodel"].iloc[3] > meta["acc_generic"].iloc[3] + 0.1
    accuracy = score(params, TASKS, dataset.test_images, dataset.test_labels, SPEC)
    assert torch.allclose(accuracy, torch.tensor(meta["acc_pmodel"].to_numpy()).float())
    # padding slots are never trained: their rows keep the seeded values of the selection
    init = select_classifier(generic[0], task_classes(TASKS, 10)[3], SPEC_ALL, SPEC, seed=5)
    padding_rows = SPEC.head_rows()[5:]
    assert torch.equal(params[3][padding_rows], init[padding_rows])


def test_same_seed_gives_bit_identical_pmodels_whatever_the_chunk(dataset, generic, zoo):
    params, _ = zoo
    alone, _ = finetune_pmodels(dataset, TASKS.iloc[[2]], generic[0], SPEC, chunk=1, **FINETUNE)
    pairs, _ = finetune_pmodels(dataset, TASKS.iloc[::-1], generic[0], SPEC, chunk=3, **FINETUNE)
    assert torch.equal(alone[0], params[2])
    assert torch.equal(pairs.flip(0), params)
    reseeded, _ = finetune_pmodels(
        dataset, TASKS.iloc[[2]], generic[0], SPEC, chunk=1, **{**FINETUNE, "seed": 6}
    )
    assert not torch.equal(reseeded[0], params[2])


def test_head_only_pmodels_train_heads_on_the_frozen_body(dataset, generic):
    spec = SPEC.with_classes(10, head_only=True)
    params, meta = finetune_pmodels(dataset, TASKS, generic[0], spec, chunk=4, **FINETUNE)
    assert params.shape == (4, spec.num_params)
    assert meta["acc_pmodel"].mean() > meta["acc_generic"].mean()
    body = generic[0][: SPEC.body_size]
    accuracy = score(params, TASKS, dataset.test_images, dataset.test_labels, spec, body=body)
    assert torch.allclose(accuracy, torch.tensor(meta["acc_pmodel"].to_numpy()).float())


def test_augment_shifts_mirrors_and_recolours():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    keep = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(augment(images, keep, "geometric"), images)
    mirrored = augment(images, torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0]]), "geometric")
    assert torch.equal(mirrored[0], images[0].flip(-1))
    assert torch.equal(mirrored[1, :, :3], images[1, :, 1:])  # moved up one row
    assert torch.equal(mirrored[1, :, 3], images[1, :, 3])  # edge replicated
    recoloured = augment(images, torch.tensor([[0, 0, 0, 5], [0, 0, 0, 0]]), "color")
    assert torch.equal(recoloured[0], images[0].flip(0))  # channel order (2, 1, 0)
    draws = draw_augment((50,), torch.Generator().manual_seed(0))
    assert draws[:, :2].abs().max() == 2 and set(draws[:, 2].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="augment must be one of"):
        augment(images, keep, "strong")


def test_bad_tasks_raise_clear_errors(dataset, generic):
    too_long = pd.DataFrame({"task_id": [0], "class_ids": [list(range(11))]})
    with pytest.raises(ValueError, match="a task has 11 classes; tasks need 1..10"):
        finetune_pmodels(dataset, too_long, generic[0], SPEC, **FINETUNE)
    with pytest.raises(ValueError, match="full net with 20 classes"):
        train_generic(
            dataset.train_images,
            dataset.train_labels,
            SEEN,
            SPEC,
            steps=1,
            lr=0.01,
            batch_size=4,
            seed=0,
            num_classes_total=N_CLASSES,
        )
    with pytest.raises(ValueError, match=r"params must be \[4, 5418\]"):
        score(torch.zeros(3, 5418), TASKS, dataset.test_images, dataset.test_labels, SPEC)
    assert unflatten(generic[0], SPEC_ALL)["head.weight"].shape == (N_CLASSES, 32)
