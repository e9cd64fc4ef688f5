"""Prompt grounding (tina.grounding) on a tiny real generic model, the few-shot baselines of
image prompts (tina.fewshot) and Tina's training draws of every prompt kind (train.draw_prompts).

The generic CNN trains on 9 of the 12 shape classes (the triangles, 9..11, are unseen: their
head rows stay at their initial values); held-out images of every class score the heads.
"""

from __future__ import annotations

import inspect
import types

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from shapes import NAMES, shape_images

import tina.grounding_choice as grounding_module
from tina import fewshot
from tina.codec import ParamCodec
from tina.data import Dataset, to_float
from tina.evaluate.context import EvalContext
from tina.evaluate.experiments import choose_shot_baselines
from tina.grounding import (
    DESCRIPTION,
    IMAGES,
    NAME,
    UNKNOWN,
    GroundingSettings,
    Slots,
    build_grounding,
    fit_rows,
    image_slots,
    load_settings,
    save_settings,
    task_shots,
    text_slots,
)
from tina.grounding_choice import (
    SCALES,
    TEMPERATURES,
    choose_grounding_stage,
    choose_settings,
    head_accuracy,
)
from tina.nets import NetSpec, forward, split_body
from tina.sampling import TinaConfig
from tina.tasks import PAD, task_classes
from tina.train_data import TrainData, draw_prompts
from tina.zoo.finetune import train_generic
from tina.zoo.store import Generic

K = 4
SEEN = list(range(9))  # the generic model's classes (class id = index in SEEN)
UNSEEN = [9, 10, 11]


@pytest.fixture(scope="module")
def world():
    """A generic CNN trained on the seen classes, random unit name embeddings, the grounding
    (default settings) and the generic features of the training and held-out images."""
    images, labels = shape_images(24, seed=0)
    held_images, held_labels = shape_images(12, seed=1)  # never trained on: they score heads
    spec_all = NetSpec("cnn5k", len(NAMES))
    generic, _ = train_generic(
        images, labels, SEEN, spec_all, steps=150, lr=0.01, batch_size=64, seed=0,
        num_classes_total=len(NAMES), progress=False,
    )  # fmt: skip
    known = torch.zeros(len(NAMES), dtype=torch.bool)
    known[SEEN] = True
    g = torch.Generator().manual_seed(0)
    names = F.normalize(torch.randn(len(NAMES), 16, generator=g), dim=1)
    grounding, feats = build_grounding(generic, spec_all, known, names, images, labels)
    return types.SimpleNamespace(
        images=images, labels=labels, held_images=held_images, held_labels=held_labels,
        spec_all=spec_all, generic=generic, known=known, names=names, grounding=grounding,
        feats=feats, held_feats=grounding.features(held_images),
    )  # fmt: skip


def close(a, b, scale: float = 1.0) -> bool:
    """Equal up to float32 rounding, relative to ``scale`` (the magnitude of the values)."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


def shot_ce(rows: torch.Tensor, slots: Slots) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy ``[B, k * n]`` of each task's head ``rows`` on its slots' shot features
    (0 where a shot is not used) and the ``[B, k * n]`` mask of the shots used."""
    b, k, n, f = slots.shot_features.shape
    x = slots.shot_features.reshape(b, k * n, f)
    logits = torch.baddbmm(rows[..., -1].unsqueeze(1), x, rows[..., :-1].transpose(1, 2))
    logits = logits.masked_fill(~slots.mask.unsqueeze(1), float("-inf"))
    valid = (torch.arange(n) < slots.shot_count.unsqueeze(-1)) & slots.mask.unsqueeze(-1)
    valid = valid.reshape(b, k * n)
    target = torch.arange(k).repeat_interleave(n).expand(b, -1)
    ce = F.cross_entropy(logits.reshape(-1, k), target.reshape(-1), reduction="none")
    return torch.where(valid.reshape(-1), ce, 0.0).reshape(b, -1), valid


def shot_loss(rows: torch.Tensor, slots: Slots) -> torch.Tensor:
    """Mean cross-entropy ``[B]`` of each task's head ``rows`` on its slots' shot features."""
    ce, valid = shot_ce(rows, slots)
    return ce.sum(1) / valid.sum(1)


# --------------------------------------------------------------------------- mixture, imprint
def test_building_checks_the_feature_mean_and_a_known_class(world):
    g = world.grounding
    seen = world.known[world.labels]
    assert close(g.feature_mean, world.feats[seen].mean(0), float(world.feats.abs().max()))
    assert torch.equal(g.known_ids, torch.tensor(SEEN))
    with pytest.raises(ValueError, match="no training image belongs to a known class"):
        unseen = world.labels >= 9
        build_grounding(
            world.generic, world.spec_all, world.known, world.names, world.images[unseen],
            world.labels[unseen],
        )  # fmt: skip


def test_mixture_withholds_the_querys_own_row(world):
    g = world.grounding
    own = 3
    query = world.names[own].unsqueeze(0)
    scale = float(g.rows.abs().max())
    # a tiny temperature picks the most similar known name's row: its own, unless withheld
    assert close(g.mixture(query, 1e-4)[0], g.rows[own], scale)
    sims = world.names[SEEN] @ world.names[own]
    sims[own] = -1.0
    top2 = sims.topk(2).values
    assert top2[0] - top2[1] > 0.01  # a clear runner-up (else the test proves nothing)
    runner_up = int(sims.argmax())
    withheld = g.mixture(query, 1e-4, exclude=torch.tensor([own]))
    assert close(withheld[0], g.rows[runner_up], scale)
    # a huge temperature weighs rows alike: the mean of the other known rows (own weight 0)
    others = [c for c in SEEN if c != own]
    flat = g.mixture(query, 1e6, exclude=torch.tensor([own]))[0]
    assert close(flat, g.rows[others].mean(0), scale)
    assert not close(flat, g.rows[SEEN].mean(0), scale)
    # PAD or an unseen class withholds nothing; unseen rows never enter a mixture
    everything = g.rows[SEEN].mean(0)
    for nothing in (PAD, UNSEEN[0]):
        assert close(g.mixture(query, 1e6, exclude=torch.tensor([nothing]))[0], everything, scale)
    # batched: each query withholds its own class only
    queries = world.names[[own, 5]]
    both = g.mixture(queries, 1e-4, exclude=torch.tensor([own, PAD]))
    assert close(both[0], g.rows[runner_up], scale) and close(both[1], g.rows[5], scale)


def test_imprinted_rows_have_the_chosen_norm_and_centred_logits(world):
    g = world.grounding.with_settings(imprint_scale=0.3)
    means = world.feats[:5]
    rows = g.imprint(means)
    norm = rows[:, :-1].norm(dim=1)
    assert close(norm, torch.full((5,), 0.3 * g.row_norm))
    assert close(F.normalize(rows[:, :-1], dim=1), F.normalize(means, dim=1))
    # the logit of the mean training feature is the known rows' mean bias, for every row
    at_mean = rows[:, :-1] @ g.feature_mean + rows[:, -1]
    assert close(at_mean, torch.full((5,), g.mean_bias), float(norm[0] * g.feature_mean.norm()))
    assert world.grounding.settings.imprint_scale == GroundingSettings().imprint_scale


# --------------------------------------------------------------------------- ground
def dispatch_slots(world) -> tuple[Slots, dict]:
    """Three tasks whose slots cover every way of grounding (see the test below)."""
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(16, generator=g), dim=0)  # a new name's embedding
    d = F.normalize(torch.randn(16, generator=g), dim=0)  # a description's embedding
    kind = torch.tensor(
        [[NAME, NAME, NAME, UNKNOWN], [DESCRIPTION, IMAGES, IMAGES, IMAGES], [NAME, NAME, 0, 0]]
    )
    class_id = torch.tensor([[2, 9, PAD, 3], [4, 5, PAD, 10], [1, PAD, PAD, PAD]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, False, False, False]])
    text = torch.zeros(3, 4, 16)
    text[0, 0], text[0, 1], text[0, 2], text[0, 3] = (
        world.names[2],
        world.names[9],
        q,
        world.names[3],
    )
    text[1, 0], text[2, 0] = d, world.names[1]
    text[2, 1] = world.names[7]  # a padding slot that says something: still zero
    # 4 shot slots per image slot; slot (1, 2) uses 3 of them (the fourth must not count)
    pools = {c: torch.nonzero(world.labels == c).squeeze(1)[:4] for c in (5, 6, 10)}
    shot_index = torch.zeros(3, 4, 4, dtype=torch.long)
    shot_index[1, 1], shot_index[1, 2], shot_index[1, 3] = pools[5], pools[6], pools[10]
    count = torch.tensor([[0, 0, 0, 0], [0, 4, 3, 4], [0, 0, 0, 0]])
    valid = (torch.arange(4) < count.unsqueeze(-1)).unsqueeze(-1)
    shot_features = world.feats[shot_index] * valid
    image = F.normalize(torch.randn(3, 4, 16, generator=g), dim=-1) * (kind == IMAGES).unsqueeze(-1)
    slots = Slots(kind, class_id, mask, text, image, shot_features, count)
    means = {c: world.feats[pools[c][:n]].mean(0) for c, n in ((5, 4), (6, 3), (10, 4))}
    return slots, {"q": q, "d": d, "means": means}


def test_ground_dispatches_every_slot_by_its_kind(world):
    g = world.grounding.with_settings(
        name_temperature=0.07, description_temperature=0.3, imprint_scale=0.2
    )
    slots, parts = dispatch_slots(world)
    rows = g.ground(slots)
    scale = float(g.rows.abs().max())
    assert rows.shape == (3, 4, world.spec_all.feature_dim + 1)
    # a known name: its own generic row, exactly
    assert torch.equal(rows[0, 0], g.rows[2]) and torch.equal(rows[2, 0], g.rows[1])
    # an unseen class's name and a new name: the name mixture (at the name temperature)
    assert close(rows[0, 1], g.mixture(world.names[9], 0.07), scale)
    assert not close(rows[0, 1], g.rows[9], scale)
    assert close(rows[0, 2], g.mixture(parts["q"], 0.07), scale)
    # a known class treated as unknown: the name mixture without its own row
    unknown = g.mixture(world.names[3].unsqueeze(0), 0.07, exclude=torch.tensor([3]))[0]
    assert close(rows[0, 3], unknown, scale) and not close(rows[0, 3], g.rows[3], scale)
    # a description: the description mixture (its own temperature)
    assert close(rows[1, 0], g.mixture(parts["d"], 0.3), scale)
    assert not close(rows[1, 0], g.mixture(parts["d"], 0.07), scale)
    # images: a named known class keeps its selection row; others are imprinted from the
    # mean of their counted shots' features
    means = parts["means"]
    assert torch.equal(rows[1, 1], g.rows[5])
    assert close(rows[1, 2], g.imprint(means[6]), scale)
    assert close(rows[1, 3], g.imprint(means[10]), scale)
    # padding slots: zero, whatever they hold
    assert torch.all(rows[2, 1:] == 0)
    # without keep_known_rows, images of a known named class are imprinted too
    imprinted = g.with_settings(keep_known_rows=False).ground(slots)
    assert close(imprinted[1, 1], g.imprint(means[5]), scale)
    assert not close(imprinted[1, 1], g.rows[5], scale)
    others = torch.ones(3, 4, dtype=torch.bool)
    others[1, 1] = False
    assert torch.equal(imprinted[others], rows[others])


def test_ground_asks_for_what_a_kind_needs(world):
    slots, _ = dispatch_slots(world)
    text_only = Slots(slots.kind[:1], slots.class_id[:1], slots.mask[:1])
    with pytest.raises(ValueError, match="name slots need their text embeddings"):
        world.grounding.ground(text_only)
    no_shots = slots[1:2]
    no_shots.shot_features = None
    with pytest.raises(ValueError, match="image slots need their shots' features"):
        world.grounding.ground(no_shots)
    names_only = text_slots(torch.tensor([[0, 1, PAD, PAD]]), world.names, NAME)
    assert torch.equal(world.grounding.ground(names_only)[0, :2], world.grounding.rows[:2])


def test_imprinted_rows_of_unseen_classes_classify_held_out_images(world):
    """8 shots per unseen class make a head far above chance on held-out images."""
    classes = torch.tensor([[*UNSEEN, PAD], [UNSEEN[1], UNSEEN[0], UNSEEN[2], PAD]])
    index = task_shots([0, 1], classes, world.labels, 8, seed=0, stream="imprint")
    slots = image_slots(classes, index, world.feats, named=True)
    rows = world.grounding.ground(slots)
    accuracy = head_accuracy(rows, classes, world.held_feats, world.held_labels)
    assert (accuracy > 1 / 3 + 0.4).all(), accuracy
    # unseen classes have no selection row: named or not, their rows are imprinted
    unnamed = image_slots(classes, index, world.feats, named=False)
    assert torch.equal(world.grounding.ground(unnamed), rows)
    # their own generic rows (left at init) are no head at all
    own = task_rows(world.grounding.rows, classes)
    assert head_accuracy(own, classes, world.held_feats, world.held_labels).mean() < accuracy.min()


def test_images_of_new_classes_keep_their_slots_with_an_explicit_mask(world):
    """A prompt of classes the data set lacks (``tina generate --images`` with new names) has
    no class ids; its mask, not the ids, says which slots are real: the same rows as the
    unnamed slots of known ids."""
    classes = torch.tensor([[*UNSEEN, PAD]])
    index = task_shots([0], classes, world.labels, 8, seed=0, stream="imprint")
    expected = world.grounding.ground(image_slots(classes, index, world.feats, named=False))
    new = torch.full_like(classes, PAD)
    slots = image_slots(new, index, world.feats, named=True, mask=classes >= 0)
    assert torch.equal(slots.mask, classes >= 0)
    assert torch.equal(world.grounding.ground(slots), expected)
    assert not image_slots(new, index, world.feats, named=True).mask.any()  # the default


def task_rows(rows: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return rows[classes.clamp(min=0)] * (classes >= 0).unsqueeze(-1)


# --------------------------------------------------------------------------- fitting
def test_fitting_raises_the_shot_accuracy_of_the_fitted_rows_only(world):
    classes = torch.tensor([[0, 4, 9, 10], [9, 10, 11, PAD]])
    index = task_shots([0, 1], classes, world.labels, 8, seed=0, stream="fit")
    slots = image_slots(classes, index, world.feats, named=True)
    g = world.grounding.with_settings(imprint_scale=0.1)
    start = g.ground(slots)
    trainable = ~world.known[classes.clamp(min=0)] & slots.mask  # the imprinted rows
    fitted = fit_rows(start, trainable, slots, steps=50, lr=0.05, l2=1e-3)
    assert torch.equal(fitted[~trainable], start[~trainable])  # frozen rows: unchanged
    assert (fitted[trainable] - start[trainable]).norm(dim=-1).min() > 1e-3
    assert (shot_loss(fitted, slots) < shot_loss(start, slots)).all()
    before, after = (
        torch.stack([
            head_accuracy(r[t : t + 1], classes[t : t + 1], world.feats[index[t].reshape(-1)],
                          world.labels[index[t].reshape(-1)])[0]
            for t in range(2)
        ])
        for r in (start, fitted)
    )  # fmt: skip
    assert after[0] > before[0] + 0.1, (before, after)  # imprinted rows lost to known ones
    assert (after >= before).all()
    # the grounding fits its imprinted rows the same way when fit_steps > 0
    via = g.with_settings(fit_steps=50, fit_lr=0.05).ground(slots)
    assert close(via, fitted, float(fitted.abs().max()))
    assert torch.equal(g.with_settings(fit_steps=0).ground(slots), start)


def test_fitting_equals_adam_on_the_autograd_loss(world):
    """fit_rows writes the gradient and Adam out by hand: it follows torch.optim.Adam on the
    loss its docstring states (shot cross-entropy plus l2 times the mean squared change),
    differentiated by autograd, up to float32 rounding of 20 steps."""
    classes = torch.tensor([[0, 4, 9, 10], [9, 10, 11, PAD]])
    index = task_shots([0, 1], classes, world.labels, 4, seed=1, stream="fit")
    slots = image_slots(classes, index, world.feats, named=True)
    slots.shot_count = torch.tensor([[4, 2, 4, 3], [1, 4, 4, 0]])  # ragged: some shots unused
    start = world.grounding.with_settings(imprint_scale=0.1).ground(slots)
    trainable = slots.mask & torch.tensor([[False, True, True, True], [True, True, False, True]])
    mask = trainable.unsqueeze(-1).float()
    delta = torch.zeros_like(start, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=0.05)
    for _ in range(20):
        rows = start + delta * mask
        penalty = (delta * mask).pow(2).sum() / mask.sum()
        loss = _pooled_shot_loss(rows, slots) + 0.01 * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected = start + delta.detach() * mask
    fitted = fit_rows(start, trainable, slots, steps=20, lr=0.05, l2=0.01)
    assert close(fitted, expected, float(expected.abs().max())), (fitted - expected).abs().max()
    assert torch.equal(fitted[~trainable], start[~trainable])


def _pooled_shot_loss(rows: torch.Tensor, slots: Slots) -> torch.Tensor:
    """Cross-entropy averaged over every valid shot of every task together (fit_rows' loss)."""
    ce, valid = shot_ce(rows, slots)
    return ce.sum() / valid.sum()


# --------------------------------------------------------------------------- choosing
def val_tasks(n: int, seed: int, split: str = "val", start: int = 0) -> pd.DataFrame:
    g = torch.Generator().manual_seed(seed)
    ids = [
        " ".join(map(str, torch.randperm(len(SEEN), generator=g)[:K].tolist())) for _ in range(n)
    ]
    return pd.DataFrame({"task_id": range(start, start + n), "split": split, "class_ids": ids})


def test_choose_settings_picks_the_best_candidate_of_its_own_table(world):
    tasks = val_tasks(6, seed=0)
    assert "test" not in " ".join(inspect.signature(choose_settings).parameters)
    chosen, table = choose_settings(
        world.grounding, tasks, world.names, -world.names, world.feats, world.labels,
        world.held_feats, world.held_labels, shots=(1, 4), k=K, seed=0, fit_steps=(0, 10),
    )  # fmt: skip
    candidates = {
        "name_temperature": list(TEMPERATURES),
        "description_temperature": list(TEMPERATURES),
        "imprint_scale": list(SCALES),
        "fit_steps": [0, 10],
    }
    assert list(table["setting"].unique()) == list(candidates)
    for what, values in candidates.items():
        part = table[table["setting"] == what].reset_index(drop=True)
        assert part["value"].tolist() == values
        best = part.loc[part["val_accuracy"].idxmax(), "value"]  # the first of equals
        assert getattr(chosen, what) == best, (what, part)
        assert part["val_accuracy"].between(0, 1).all()
    assert chosen.keep_known_rows == world.grounding.settings.keep_known_rows
    assert chosen.fit_lr == world.grounding.settings.fit_lr
    # the table scores on the validation images it was given: recompute one entry
    classes = task_classes(tasks, K)
    grounded = world.grounding.with_settings(name_temperature=chosen.name_temperature).ground(
        text_slots(classes, world.names, UNKNOWN)
    )
    accuracy = head_accuracy(grounded, classes, world.held_feats, world.held_labels).mean()
    row = table[
        (table["setting"] == "name_temperature") & (table["value"] == chosen.name_temperature)
    ]
    assert row["val_accuracy"].item() == pytest.approx(float(accuracy), abs=1e-6)
    # the name mixture of known classes without their own rows beats chance once chosen
    assert float(accuracy) > 1 / K
    # image shots score on both uses: every slot images alone, and every second slot images
    # among selection rows; the mean over both uses and the shot counts
    chosen_before = ("name_temperature", "description_temperature", "imprint_scale")
    fitted = world.grounding.with_settings(
        **{what: getattr(chosen, what) for what in chosen_before}, fit_steps=10
    )
    uses = []
    for n in (1, 4):
        index = task_shots(
            tasks["task_id"].tolist(), classes, world.labels, n, 0, "grounding-shots"
        )
        uses.append(image_slots(classes, index, world.feats, named=False))
        mixed = image_slots(classes, index, world.feats, named=True)
        mixed.class_id = torch.where(torch.arange(K) % 2 == 0, PAD, classes)
        uses.append(mixed)
    accuracy = torch.stack(
        [
            head_accuracy(fitted.ground(x), classes, world.held_feats, world.held_labels)
            for x in uses
        ]
    ).mean()
    row = table[(table["setting"] == "fit_steps") & (table["value"] == 10)]
    assert row["val_accuracy"].item() == pytest.approx(float(accuracy), abs=1e-6)


def test_choose_grounding_stage_reads_validation_tasks_and_images_only(world, monkeypatch):
    """Substitution: garbage test images and extra test tasks change nothing chosen."""
    tasks = pd.concat([val_tasks(6, seed=0), val_tasks(4, seed=1, split="test_id", start=6)])
    noise = torch.randint(0, 256, world.held_images.shape, generator=torch.Generator())
    generic = Generic(world.generic, world.spec_all, world.known)
    embeddings = {"names": world.names, "descriptions": -world.names}
    section = {"fit_steps": [0, 10], "keep_known_rows": True}
    results = []
    for test_images in (world.held_images, noise.to(torch.uint8)):
        dataset = Dataset(
            world.images, world.labels, world.held_images, world.held_labels, test_images,
            world.held_labels, pd.DataFrame({"name": NAMES}),
        )  # fmt: skip
        monkeypatch.setattr(grounding_module, "load_dataset", lambda *_, d=dataset: d)
        monkeypatch.setattr(grounding_module, "load_generic", lambda _: generic)
        monkeypatch.setattr(grounding_module, "load_embeddings", lambda _: embeddings)
        monkeypatch.setattr(grounding_module, "read_tasks", lambda _: tasks)
        inputs = types.SimpleNamespace(
            dataset="d", classes="c", generic="g", embeddings="e", tasks="t"
        )
        results.append(choose_grounding_stage(inputs, section, shots=(1, 4), k=K, seed=0))
    (chosen, table), (chosen_noise, table_noise) = results
    assert chosen == chosen_noise
    pd.testing.assert_frame_equal(table, table_noise)
    direct, direct_table = choose_settings(
        world.grounding, tasks[tasks["split"] == "val"], world.names, -world.names, world.feats,
        world.labels, world.held_feats, world.held_labels, shots=(1, 4), k=K, seed=0,
        fit_steps=(0, 10),
    )  # fmt: skip
    assert chosen == direct
    pd.testing.assert_frame_equal(table, direct_table)


def test_settings_round_trip_through_their_file(tmp_path):
    settings = GroundingSettings(
        name_temperature=0.02, description_temperature=0.2, imprint_scale=0.5, fit_steps=10,
        fit_lr=0.01, keep_known_rows=False,
    )  # fmt: skip
    save_settings(settings, tmp_path / "grounding.json")
    assert load_settings(tmp_path / "grounding.json") == settings
    assert GroundingSettings.from_dict({**settings.to_dict(), "unrelated": 1}) == settings
    assert GroundingSettings.from_dict({}) == GroundingSettings()
    with pytest.raises(FileNotFoundError, match="missing grounding settings file"):
        load_settings(tmp_path / "none.json")


# --------------------------------------------------------------------------- few-shot baselines
def test_logistic_head_learns_the_shots(world):
    classes = torch.tensor([[*UNSEEN, PAD], [0, 4, 9, 10]])
    index = task_shots([0, 1], classes, world.labels, 8, seed=0, stream="logistic")
    slots = image_slots(classes, index, world.feats, named=False)
    rows = fewshot.logistic_head(slots, l2=1e-3)
    assert torch.all(rows[~slots.mask] == 0)  # padding rows stay at zero
    shots = head_accuracy(
        rows, classes, world.feats[index.reshape(-1)], world.labels[index.reshape(-1)]
    )
    held = head_accuracy(rows, classes, world.held_feats, world.held_labels)
    chance = 1 / slots.mask.sum(1).float()
    assert (shots > chance + 0.4).all(), shots
    assert (held > chance + 0.25).all(), held
    assert (shot_loss(rows, slots) < torch.log(slots.mask.sum(1).float())).all()  # < at zero


def test_few_shot_baselines_choose_their_settings_without_test_images(world):
    """Substitution: the image-prompt experiment's choices of the logistic head's L2 weight and
    the fine-tuning learning rate (per shot count, on validation tasks and images) stay the same
    when every test image is noise, while scores on the test images change."""
    spec = NetSpec("cnn5k", K)
    g = world.grounding
    codec = ParamCodec(
        spec, torch.zeros(spec.num_params), torch.ones(spec.num_params), g.known_rows.mean(0),
        world.generic, residual=True,
    )  # fmt: skip
    tina = types.SimpleNamespace(
        grounding=g, codec=codec, spec=spec,
        config=types.SimpleNamespace(functional_augment="none"),
        base=lambda slots: codec.base_from_rows(g.ground(slots), slots.mask),
    )  # fmt: skip
    val = val_tasks(4, seed=3)
    index = task_shots(
        val["task_id"].tolist(), task_classes(val, K), world.labels, 4, seed=0, stream="v"
    )
    noise = torch.randint(0, 256, world.held_images.shape, generator=torch.Generator())
    chosen, test_scores = [], []
    for test_images in (world.held_images, noise.to(torch.uint8)):
        dataset = Dataset(
            world.images, world.labels, world.held_images, world.held_labels, test_images,
            world.held_labels, pd.DataFrame({"name": NAMES}),
        )  # fmt: skip
        ctx = EvalContext(tina, dataset, val, zoo=None, embeddings={}, seed=0, config=None)
        for n in (1, 4):
            chosen.append(choose_shot_baselines(ctx, val, index[..., :n], world.feats))
        slots = image_slots(task_classes(val, K), index, world.feats, named=False)
        test_scores.append(ctx.score(tina.base(slots), val))
    assert chosen[:2] == chosen[2:]
    assert not torch.equal(*test_scores)  # the test images are read where tasks are scored


@pytest.mark.parametrize("head_only", [False, True])
def test_finetuning_on_the_shots_lowers_their_loss(world, head_only):
    """The whole net, or a head-only net's head on the frozen generic body."""
    spec = NetSpec("cnn5k", K, head_only=head_only)
    g = world.grounding
    codec = ParamCodec(
        spec, torch.zeros(spec.num_params), torch.ones(spec.num_params), g.known_rows.mean(0),
        world.generic, residual=True,
    )  # fmt: skip
    body = split_body(world.generic, world.spec_all)[0] if head_only else None
    classes = torch.tensor([[0, 4, 9, 10], [9, 10, 11, PAD]])
    index = task_shots([0, 1], classes, world.labels, 4, seed=0, stream="finetune")
    slots = image_slots(classes, index, world.feats, named=True)
    start = codec.base_from_rows(g.ground(slots), slots.mask)

    def loss(params):  # cross-entropy on the un-augmented shots, per task
        t, k, n = index.shape
        x = to_float(world.images[index.reshape(-1)]).reshape(t, k * n, 3, 16, 16)
        logits = forward(params, x, spec, body=body)
        logits = logits.masked_fill(~slots.mask.unsqueeze(1), float("-inf"))
        target = torch.arange(k).repeat_interleave(n).expand(t, -1)
        ce = F.cross_entropy(logits.reshape(-1, k), target.reshape(-1), reduction="none")
        keep = slots.mask.repeat_interleave(n, dim=1).reshape(-1)
        return torch.where(keep, ce, 0.0).reshape(t, -1).sum(1) / keep.reshape(t, -1).sum(1)

    def tune(lr, steps=30):
        return fewshot.finetune_on_shots(
            start, spec, world.images, index, slots.mask, lr=lr, steps=steps,
            augment_mode="geometric", seed=0, body=body,
        )  # fmt: skip

    tuned = tune(1e-3)
    assert (loss(tuned) < loss(start)).all(), (loss(start), loss(tuned))
    assert torch.equal(tuned, tune(1e-3))  # seeded augmentation: the same nets
    assert torch.allclose(tune(1e-9, steps=5), start, rtol=0, atol=1e-6)


def test_choose_takes_the_first_best_candidate():
    scores = {1e-3: 0.5, 1e-2: 0.75, 1e-1: 0.75}
    best, seen = fewshot.choose(list(scores), scores.get, "a weight")
    assert best == 1e-2 and seen == scores


# --------------------------------------------------------------------------- training draws
def prompt_data(world, shots=(1, 2, 4)) -> TrainData:
    """What draw_prompts reads: name, description (none for classes 2 and 10) and image
    prompts of the world's classes (p-models are not read)."""
    spec = NetSpec("cnn5k", K)
    has_description = torch.ones(len(NAMES), dtype=torch.bool)
    has_description[[2, 10]] = False
    g = torch.Generator().manual_seed(2)
    return TrainData(
        params=torch.zeros(1, spec.num_params), classes=torch.zeros(1, K, dtype=torch.long),
        generic=world.generic, spec=spec, class_emb=world.names, description_emb=-world.names,
        has_description=has_description, known=world.known, class_names=NAMES,
        val_tasks=pd.DataFrame(), images=world.images, labels=world.labels,
        val_images=world.held_images, val_labels=world.held_labels, grounding=world.grounding,
        features=world.feats,
        image_prompts=F.normalize(torch.randn(len(world.images), 16, generator=g), dim=1),
        shots=shots,
    )  # fmt: skip


def draw_classes(n: int = 48) -> torch.Tensor:
    """``n`` tasks of K classes of all 12 (seen and unseen), every third with a padded slot."""
    g = torch.Generator().manual_seed(3)
    classes = torch.stack([torch.randperm(len(NAMES), generator=g)[:K] for _ in range(n)])
    classes[::3, -1] = PAD
    return classes


def draw(data, classes, seed=0, **changes):
    return draw_prompts(data, classes, TinaConfig(**changes), torch.Generator().manual_seed(seed))


def test_draw_prompts_of_one_kind(world):
    data, classes = prompt_data(world), draw_classes()
    real, cid = classes >= 0, classes.clamp(min=0)
    for kinds, expected in (({"names": 1.0}, NAME), ({"unknown": 1.0}, UNKNOWN)):
        slots = draw(data, classes, prompt_kinds=kinds, unknown_share=1.0)
        assert (slots.kind[real] == expected).all()
        assert torch.equal(slots.class_id, classes) and torch.equal(slots.mask, real)
        assert torch.equal(slots.prompts()[real], world.names[classes[real]])
        assert torch.all(slots.prompts()[~real] == 0)
    # descriptions: a class without one keeps its name
    slots = draw(data, classes, prompt_kinds={"descriptions": 1.0})
    described = data.has_description[cid] & real
    assert (slots.kind[described] == DESCRIPTION).all()
    assert (slots.kind[real & ~described] == NAME).all() and (real & ~described).any()
    assert torch.equal(slots.prompts()[described], -world.names[classes[described]])
    assert torch.equal(slots.prompts()[real & ~described], world.names[classes[real & ~described]])
    # images: every slot, named by a coin of rate image_names
    for rate, named in ((1.0, real), (0.0, torch.zeros_like(real))):
        slots = draw(data, classes, prompt_kinds={"images": 1.0}, image_names=rate)
        assert (slots.kind[real] == IMAGES).all()
        assert torch.equal(slots.class_id >= 0, named)
    # the same generator, the same draw
    first = draw(data, classes, seed=5)
    again = draw(data, classes, seed=5)
    assert all(
        torch.equal(getattr(first, name), getattr(again, name))
        for name in ("kind", "class_id", "mask", "text", "image", "shot_features", "shot_count")
    )


def test_drawn_image_prompts_are_unit_means_of_fresh_shots_of_their_class(world):
    data, classes = prompt_data(world), draw_classes()
    real = classes >= 0
    slots = draw(data, classes, prompt_kinds={"images": 1.0}, image_names=0.5)
    counts = slots.shot_count
    assert torch.all(counts[~real] == 0)
    for t in range(len(classes)):  # one shot count per task, one of data.shots
        assert len(counts[t][real[t]].unique()) == 1 and int(counts[t, 0]) in data.shots
    assert set(counts[real].unique().tolist()) == set(data.shots)  # 48 tasks draw every count
    assert slots.image[real].norm(dim=-1).sub(1).abs().max() < 1e-5
    assert torch.all(slots.image[~real] == 0)
    named = slots.class_id[real] >= 0
    assert named.any() and (~named).any()
    # every counted shot is a training image of the slot's class, distinct within the slot;
    # the image prompt is the normalised mean of those images' prompts
    distance = torch.cdist(slots.shot_features.reshape(-1, world.feats.shape[1]), world.feats)
    nearest = distance.argmin(1).reshape(slots.shot_features.shape[:3])
    scale = float(world.feats.norm(dim=1).max())
    for t, j in torch.nonzero(real).tolist():
        n = int(counts[t, j])
        used = nearest[t, j, :n]
        assert close(slots.shot_features[t, j, :n], world.feats[used], scale)
        assert (world.labels[used] == classes[t, j]).all() and len(set(used.tolist())) == n
        assert torch.all(slots.shot_features[t, j, n:] == 0)
        mean = F.normalize(data.image_prompts[used].mean(0), dim=0)
        assert close(slots.image[t, j], mean)
    # fresh shots at every draw
    other = draw(data, classes, seed=1, prompt_kinds={"images": 1.0})
    assert not torch.equal(other.shot_features, slots.shot_features)


def test_drawn_unknown_names_start_from_other_classes_rows(world):
    data, classes = prompt_data(world), draw_classes()
    real = classes >= 0
    slots = draw(data, classes, prompt_kinds={"unknown": 1.0}, unknown_share=0.5)
    unknown, named = slots.kind == UNKNOWN, slots.kind == NAME
    assert (unknown & real).any() and (named & real).any()
    assert torch.all((unknown | named)[real])
    rows = world.grounding.ground(slots)
    own = world.grounding.rows[classes.clamp(min=0)]
    gap = (rows - own).norm(dim=-1)
    norm = own.norm(dim=-1)
    # an unknown slot's base is never its class's own row (a known class's row is withheld)
    assert (gap[unknown & real] > 0.1 * norm[unknown & real]).all()
    known_names = named & real & world.known[classes.clamp(min=0)]
    assert torch.equal(rows[known_names], own[known_names])
    unknown = unknown & real
    withheld = world.grounding.mixture(
        slots.text[unknown], world.grounding.settings.name_temperature, classes[unknown]
    )
    assert close(rows[unknown], withheld, float(own.abs().max()))


def test_draw_prompts_mixes_kinds_task_by_task(world):
    data, classes = prompt_data(world), draw_classes(96)
    real = classes >= 0
    slots = draw(data, classes)  # the default rates: every kind
    kinds = set(slots.kind[real].unique().tolist())
    assert kinds == {NAME, UNKNOWN, DESCRIPTION, IMAGES}
    for t in range(len(classes)):  # a task's slots are all images, or all text
        task = slots.kind[t][real[t]]
        assert (task == IMAGES).all() or not (task == IMAGES).any()
        assert not ((task == DESCRIPTION).any() and (task == UNKNOWN).any())
