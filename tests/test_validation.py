"""Validation images: held out of every training, and the only images any choice is made on.

The proof is by substitution: replace every test image with noise, rerun what makes choices
(the zoo's validation scores, Tina's checkpoint selection), and nothing chosen may change,
while what is scored on test tasks does change (so the test images are really in use there).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from shapes import NAMES, shape_images

from tina.data import Dataset, prepare_dataset, split_validation
from tina.grounding import build_grounding
from tina.nets import NetSpec
from tina.sampling import TinaConfig
from tina.tasks import task_classes
from tina.train import train_tina
from tina.train_data import TrainData
from tina.zoo.finetune import finetune_pmodels, train_generic

K = 4
SEEN = list(range(9))


def test_split_holds_out_a_seeded_share_of_every_class():
    labels = torch.arange(5).repeat_interleave(torch.tensor([10, 7, 2, 1, 20]))
    train, val = split_validation(labels, 0.2, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(len(labels)))
    counts = torch.bincount(labels[val], minlength=5).tolist()
    assert counts == [2, 1, 1, 0, 4]  # round(0.2 n), at least one, never a class's last item
    again, _ = split_validation(labels, 0.2, seed=0)
    other, _ = split_validation(labels, 0.2, seed=1)
    assert torch.equal(train, again) and not torch.equal(train, other)


def test_prepared_data_set_records_its_validation_images(tmp_path):
    ds = prepare_dataset(
        "openmoji", max_classes=4, train_per_class=10, test_per_class=3, val_fraction=0.3,
        augment="mild", seed=0,
    )  # fmt: skip
    assert torch.bincount(ds.val_labels).tolist() == [3] * 4
    assert torch.bincount(ds.train_labels).tolist() == [7] * 4
    flat_train = {bytes(image.flatten().tolist()) for image in ds.train_images}
    assert not any(bytes(image.flatten().tolist()) in flat_train for image in ds.val_images)
    val_images, val_labels = ds.scoring_images("val")
    assert val_images is ds.val_images and val_labels is ds.val_labels
    assert ds.scoring_images("test_id")[0] is ds.test_images


@pytest.fixture(scope="module")
def data_sets():
    """One data set, and the same with every test image replaced by noise."""
    images, labels = shape_images(20, seed=0)
    val_images, val_labels = shape_images(6, seed=1)
    test_images, test_labels = shape_images(10, seed=2)
    noise = torch.randint(0, 256, test_images.shape, generator=torch.Generator().manual_seed(9))
    classes = pd.DataFrame({"name": NAMES})

    def build(test):
        return Dataset(images, labels, val_images, val_labels, test, test_labels, classes)

    return build(test_images), build(noise.to(torch.uint8))


@pytest.fixture(scope="module")
def zoos(data_sets):
    """The same tiny zoo fine-tuned on both data sets: 20 training, 6 validation, 6 test tasks."""
    clean = data_sets[0]
    spec_all = NetSpec("cnn5k", len(NAMES))
    generic, _ = train_generic(
        clean.train_images, clean.train_labels, SEEN, spec_all, steps=120, lr=0.01,
        batch_size=64, seed=0, num_classes_total=len(NAMES), progress=False,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    tasks = pd.DataFrame(
        {
            "task_id": range(32),
            "split": ["train"] * 20 + ["val"] * 6 + ["test_id"] * 6,
            "class_ids": [torch.randperm(9, generator=g)[:K].tolist() for _ in range(32)],
        }
    )
    spec = NetSpec("cnn5k", K)
    runs = [
        finetune_pmodels(
            ds, tasks, generic, spec, steps=30, lr=0.01, batch_size=16, seed=0, progress=False
        )
        for ds in data_sets
    ]
    return generic, spec, tasks, runs


def test_zoo_scores_validation_tasks_on_validation_images_only(zoos):
    _, _, tasks, ((params, meta), (params_noise, meta_noise)) = zoos
    assert torch.equal(params, params_noise)  # fine-tuning never reads a test image
    val = (tasks["split"] == "val").to_numpy()
    for column in ("acc_pmodel", "acc_generic"):
        assert meta[column][val].tolist() == meta_noise[column][val].tolist()
        assert meta[column][~val].tolist() != meta_noise[column][~val].tolist()


def test_tina_checkpoint_is_chosen_without_test_images(data_sets, zoos):
    generic, spec, tasks, ((params, _), _) = zoos
    known = torch.zeros(len(NAMES), dtype=torch.bool)
    known[SEEN] = True
    emb = torch.nn.functional.normalize(torch.randn(len(NAMES), 16), dim=1)
    cfg = TinaConfig(
        width=32, depth=1, heads=2, chunk_size=64, steps=60, batch_size=16, lr=3e-3, warmup=10,
        eval_every=20, eval_sampler_steps=4, functional_weight=1.0,
    )  # fmt: skip
    train = (tasks["split"] == "train").to_numpy()
    train_params = params[torch.from_numpy(train)]
    results = []
    for ds in data_sets:
        grounding, features = build_grounding(
            generic, spec.with_classes(len(NAMES)), known, emb, ds.train_images, ds.train_labels
        )
        data = TrainData(
            params=train_params, classes=task_classes(tasks[train], K), generic=generic,
            spec=spec, class_emb=emb, description_emb=-emb,
            has_description=torch.ones(len(NAMES), dtype=torch.bool), known=known,
            class_names=NAMES, val_tasks=tasks[tasks["split"] == "val"], images=ds.train_images,
            labels=ds.train_labels, val_images=ds.val_images, val_labels=ds.val_labels,
            grounding=grounding, features=features,
            image_prompts=torch.nn.functional.normalize(features[:, :16], dim=1), shots=(1, 4),
        )  # fmt: skip
        results.append(train_tina(data, cfg, seed=0))
    (tina, history), (tina_noise, history_noise) = results
    assert history["val_accuracy"].tolist() == history_noise["val_accuracy"].tolist()
    chosen = dict(tina.model.state_dict())
    for name, value in tina_noise.model.state_dict().items():
        assert torch.equal(chosen[name], value), name
