"""Tina training: augmentation keeps prompts and head rows aligned, padding, learning, sampling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from shapes import NAMES, shape_images

from tina.codec import ParamCodec
from tina.data import Dataset, to_float
from tina.grounding import GroundingSettings, build_grounding
from tina.nets import NetSpec, forward, score
from tina.sampling import TinaConfig, load_tina, name_slots, save_tina
from tina.tasks import TaskDrawer, task_classes
from tina.train import augment_slots, functional_images, train_tina
from tina.train_data import TrainData, load_train_data
from tina.zoo.finetune import augment, draw_augment, finetune_pmodels, train_generic
from tina.zoo.store import Generic, Zoo

K = 4
SEEN = list(range(9))


@pytest.fixture(scope="module")
def zoo():
    """A tiny real zoo: generic CNN on 9 of 12 shape classes, 24 p-models of 4 seen classes."""
    images, labels = shape_images(24, seed=0)
    test_images, test_labels = shape_images(12, seed=1)
    spec_all = NetSpec("cnn5k", len(NAMES))
    generic, _ = train_generic(
        images, labels, SEEN, spec_all, steps=150, lr=0.01, batch_size=64, seed=0,
        num_classes_total=len(NAMES), progress=False,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    tasks = pd.DataFrame(
        {
            "task_id": range(30),
            "class_ids": [torch.randperm(9, generator=g)[:K].tolist() for _ in range(30)],
        }
    )
    dataset = Dataset(
        images, labels, test_images, test_labels, test_images, test_labels,
        classes=pd.DataFrame({"name": NAMES}),
    )  # fmt: skip
    spec = NetSpec("cnn5k", K)
    params, meta = finetune_pmodels(
        dataset, tasks, generic, spec, steps=40, lr=0.01, batch_size=16, seed=0, progress=False
    )
    emb = torch.nn.functional.normalize(torch.randn(len(NAMES), 16, generator=g), dim=1)
    return {
        "generic": generic, "spec": spec, "params": params, "tasks": tasks, "emb": emb,
        "images": images, "labels": labels, "test_images": test_images,
        "test_labels": test_labels, "meta": meta,
    }  # fmt: skip


def tiny_config(**changes) -> TinaConfig:
    base = dict(width=32, depth=1, heads=2, chunk_size=64, steps=120, batch_size=16, lr=3e-3,
                warmup=10, eval_every=60, eval_sampler_steps=4)  # fmt: skip
    return TinaConfig(**{**base, **changes})


def train_data(zoo, drawer=None) -> TrainData:
    """The first 24 tasks' p-models to train on, the last 6 tasks to validate on; every prompt
    kind (descriptions: the negated name embeddings; image prompts: the images' features)."""
    known = torch.zeros(len(NAMES), dtype=torch.bool)
    known[SEEN] = True
    grounding, features = build_grounding(
        zoo["generic"], zoo["spec"].with_classes(len(NAMES)), known, zoo["emb"], zoo["images"],
        zoo["labels"],
    )  # fmt: skip
    return TrainData(
        params=zoo["params"][:24], classes=task_classes(zoo["tasks"].iloc[:24], K),
        generic=zoo["generic"], spec=zoo["spec"], class_emb=zoo["emb"],
        description_emb=-zoo["emb"], has_description=torch.ones(len(NAMES), dtype=torch.bool),
        known=known, class_names=NAMES, val_tasks=zoo["tasks"].iloc[24:], images=zoo["images"],
        labels=zoo["labels"], val_images=zoo["test_images"], val_labels=zoo["test_labels"],
        grounding=grounding, features=features,
        image_prompts=torch.nn.functional.normalize(features[:, :16], dim=1), shots=(1, 4),
        drawer=drawer,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(zoo):
    return train_tina(train_data(zoo), tiny_config(), seed=0)


def test_augmentation_keeps_prompts_and_head_rows_aligned(zoo):
    """A permuted sample's net makes the same predictions, relabelled by the permutation."""
    spec, params = zoo["spec"], zoo["params"][:8]
    classes = task_classes(zoo["tasks"].iloc[:8], K)
    cfg = tiny_config(slot_dropout=0.0)
    new_classes, new_params, mask = augment_slots(classes, params, cfg, spec, torch.Generator())
    assert mask.all()
    images = zoo["test_images"][:20].float().div(127.5).sub(1).expand(8, -1, -1, -1, -1)
    before = forward(params, images, spec).argmax(-1)  # slot indices
    after = forward(new_params, images, spec).argmax(-1)
    # the same class wins, whichever slot it sits in now
    assert torch.equal(classes.gather(1, before), new_classes.gather(1, after))
    assert not torch.equal(classes, new_classes)


def test_codec_round_trip_and_slot_equivariance(zoo):
    spec, params = zoo["spec"], zoo["params"]
    classes = task_classes(zoo["tasks"], K)
    codec = ParamCodec.fit(params, classes, zoo["generic"], spec, residual=True, normalize=True)
    known = torch.ones_like(classes, dtype=torch.bool)
    base = codec.base(classes, known)
    code = codec.encode(params, base)
    assert torch.allclose(codec.decode(code, base), params, atol=1e-5)
    assert abs(float(code.std()) - 1.0) < 0.2  # normalised
    perm = torch.tensor([2, 0, 3, 1])
    rows = spec.head_rows()
    permuted = params.clone()
    permuted[:, rows.reshape(-1)] = params[:, rows[perm].reshape(-1)]
    code_p = codec.encode(permuted, codec.base(classes[:, perm], known))
    assert torch.allclose(code_p[:, rows], code[:, rows][:, perm], atol=1e-5)


def test_slot_dropout_pads_tasks(zoo):
    spec, params = zoo["spec"], zoo["params"]
    classes = task_classes(zoo["tasks"], K)
    cfg = tiny_config(slot_dropout=1.0)
    new_classes, _, mask = augment_slots(classes, params, cfg, spec, torch.Generator())
    assert (mask.sum(1) >= 2).all() and (mask.sum(1) < K).any()
    assert torch.equal(new_classes < 0, ~mask)


def test_training_loss_falls_and_generated_nets_beat_chance(zoo, trained):
    tina, history = trained
    assert list(history["step"]) == [60, 120]
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    test = zoo["tasks"].iloc[24:]
    classes = task_classes(test, K)
    params = tina.generate(name_slots(classes, zoo["emb"]), seed=3)
    acc = score(params, test, zoo["test_images"], zoo["test_labels"], zoo["spec"])
    assert float(acc.mean()) > 1 / K + 0.25, acc


def test_padding_for_fewer_classes(zoo, trained):
    tina, _ = trained
    test = pd.DataFrame({"task_id": [0, 1], "class_ids": [[0, 4], [8, 2, 6]]})
    classes = task_classes(test, K)
    params = tina.generate(name_slots(classes, zoo["emb"]), seed=0)
    rows = zoo["spec"].head_rows()
    assert torch.count_nonzero(params[0, rows[2:]]) == 0
    assert torch.count_nonzero(params[1, rows[3:]]) == 0
    acc = score(params, test, zoo["test_images"], zoo["test_labels"], zoo["spec"])
    assert (acc > torch.tensor([0.5, 1 / 3])).all(), acc


def test_same_seed_same_nets_and_checkpoint_round_trip(zoo, trained, tmp_path):
    tina, _ = trained
    classes = task_classes(zoo["tasks"].iloc[24:], K)
    slots = name_slots(classes, zoo["emb"])
    a = tina.generate(slots, seed=5)
    assert torch.equal(a, tina.generate(slots, seed=5))
    assert not torch.equal(a, tina.generate(slots, seed=6))
    save_tina(tina, tmp_path / "tina.safetensors")
    again = load_tina(tmp_path / "tina.safetensors")
    assert torch.equal(a, again.generate(slots, seed=5))
    assert again.grounding.settings == tina.grounding.settings


def test_functional_images_are_augmented_like_the_zoo(zoo):
    """The functional loss reads the indexed training images, unchanged with ``none`` and
    shifted, mirrored and channel-shuffled (the zoo's augmentation, same draws) with ``color``."""
    images = to_float(zoo["images"][:40])
    index = torch.tensor([[0, 5, 9], [3, 3, 7]])
    plain = functional_images(images, {"fn_index": index}, "none")
    assert torch.equal(plain, images[index])
    draws = draw_augment((2, 3), torch.Generator().manual_seed(0))
    batch = {"fn_index": index, "fn_draws": draws}
    coloured = functional_images(images, batch, "color")
    expected = augment(images[index.reshape(-1)], draws.reshape(-1, 4), "color")
    assert coloured.shape == plain.shape
    assert torch.equal(coloured, expected.reshape(plain.shape))
    assert not torch.equal(coloured, plain)


def test_fresh_tasks_train_without_a_residual_base(zoo):
    """Fresh tasks (functional loss only) also train a Tina that diffuses raw parameters."""
    held_out = {frozenset(ids) for ids in zoo["tasks"].iloc[24:]["class_ids"]}
    drawer = TaskDrawer([torch.tensor(SEEN)], torch.zeros(24, dtype=torch.long), K, held_out)
    cfg = tiny_config(
        steps=6, eval_every=6, residual=False, functional_weight=1.0, functional_tasks=4
    )
    _, history = train_tina(train_data(zoo, drawer), cfg, seed=0)
    assert history["fresh_loss"].iloc[-1] > 0


def test_load_train_data_takes_the_training_pmodels_and_the_validation_tasks(zoo):
    """One loader picks what training reads from a run: the zoo's rows of split ``train``, the
    ``val`` tasks, the class-name prompts, and fresh tasks only when given the class split."""
    splits = ["train", "val", "test_id"] * 10
    ids = [" ".join(map(str, c)) for c in zoo["tasks"]["class_ids"]]
    tasks = zoo["tasks"].assign(split=splits, k=K, group="all", class_ids=ids)
    trained = torch.zeros(len(NAMES), dtype=torch.bool)
    trained[SEEN] = True
    generic = Generic(zoo["generic"], zoo["spec"].with_classes(len(NAMES)), trained)
    store = Zoo(zoo["params"], task_classes(tasks, K), tasks, zoo["spec"])
    val_images, val_labels = shape_images(4, seed=3)
    dataset = Dataset(
        zoo["images"], zoo["labels"], val_images, val_labels, zoo["test_images"],
        zoo["test_labels"], classes=pd.DataFrame({"name": NAMES}),
    )  # fmt: skip
    embeddings = {
        "names": zoo["emb"], "descriptions": -zoo["emb"],
        "has_description": torch.ones(len(NAMES), dtype=torch.bool),
    }  # fmt: skip
    bank = torch.randn(len(zoo["images"]), 16)
    settings = GroundingSettings(imprint_scale=0.2)
    data = load_train_data(dataset, tasks, embeddings, generic, store, settings, bank)
    train = torch.tensor([s == "train" for s in splits])
    assert torch.equal(store.train_mask(), train)
    assert torch.equal(data.params, zoo["params"][train])
    assert torch.equal(data.classes, task_classes(tasks[tasks["split"] == "train"], K))
    assert data.val_tasks["task_id"].tolist() == list(range(1, 30, 3))
    assert data.class_emb is zoo["emb"] and data.known is trained and data.class_names == NAMES
    assert data.drawer is None
    assert data.image_prompts is bank and data.grounding.settings == settings
    assert data.features.shape == (len(zoo["images"]), zoo["spec"].feature_dim)
    assert data.val_images is val_images and data.val_labels is val_labels  # never test images
    split = pd.DataFrame({"class_id": range(len(NAMES)), "group": "g", "seen": trained.numpy()})
    with_split = load_train_data(
        dataset, tasks, embeddings, generic, store, settings, bank, class_split=split
    )
    assert isinstance(with_split.drawer, TaskDrawer)
    subset = data.subset(torch.tensor([2, 0]))
    assert torch.equal(subset.params, data.params[[2, 0]]) and subset.val_tasks is data.val_tasks
