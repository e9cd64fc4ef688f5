"""Evaluation records and experiment logic on small hand-made inputs with known answers, plus
the tiny workflow run end to end (marked ``workflow``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tina.data import to_float
from tina.evaluate.context import EvalConfig, EvalContext, task_slots
from tina.evaluate.experiments import (
    EXPERIMENTS,
    describable_tasks,
    description_slots,
    evaluate_order,
    evaluate_sampler,
    image_prompt_banks,
    order_permutations,
    permute_tasks,
)
from tina.evaluate.records import (
    RECORD_COLUMNS,
    baseline_records,
    chance_records,
    majority_records,
    records_frame,
    reference_records,
)
from tina.grounding import DESCRIPTION, IMAGES, NAME, image_slots, task_shots
from tina.nets import NetSpec, features, init_params, split_body
from tina.report.summary import main_table_markdown
from tina.report.tables import check_records, make_tables
from tina.zoo.finetune import select_classifier
from tina.zoo.store import Zoo

N_CLASSES, K = 6, 3


def tasks_frame(class_ids: list[list[int]], split: str = "test_id", start: int = 0):
    """A task table of the workflow's shape."""
    return pd.DataFrame(
        {
            "task_id": range(start, start + len(class_ids)),
            "split": split,
            "k": [len(ids) for ids in class_ids],
            "n_unseen": 0,
            "class_ids": [" ".join(map(str, ids)) for ids in class_ids],
            "class_names": [";".join(f"c{i}" for i in ids) for ids in class_ids],
        }
    )


def toy_images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose class sets the mean colour and a stripe (separable by a small CNN)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)
    images = torch.randint(0, 60, (len(labels), 3, 16, 16), generator=g)
    for c in range(N_CLASSES):
        rows = labels == c
        images[rows, c % 3] += 120 + 20 * (c // 3)
        images[rows, :, 2 * c : 2 * c + 2, :] += 60
    return images.clamp(0, 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def toy():
    """A data set, and a generic net (random body, least-squares head) that separates it."""
    train_images, train_labels = toy_images(12, seed=1)
    test_images, test_labels = toy_images(8, seed=2)
    spec_all = NetSpec("cnn5k", N_CLASSES, head_only=False)
    flat = init_params(spec_all, torch.Generator().manual_seed(0))
    body = split_body(flat, spec_all)[0]
    feats = features(body, to_float(train_images), spec_all)
    design = torch.cat([feats, torch.ones(len(feats), 1)], dim=1)
    target = F.one_hot(train_labels, N_CLASSES).float() * 2 - 1
    head = torch.linalg.lstsq(design, target).solution.T  # [C, feature_dim + 1]
    flat[spec_all.head_offset :] = torch.cat([head[:, :-1].reshape(-1), head[:, -1]])
    data = SimpleNamespace(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    return data, flat, spec_all


@dataclass
class SelectionTina:
    """Stand-in for Tina: the generic net with classifier selection of the prompt's classes.

    With ``follow_order`` it is permutation-equivariant (rows follow the classes); without, it
    ignores the order (rows of the sorted classes), as a generator blind to the prompt order.
    """

    generic: torch.Tensor
    spec_all: NetSpec
    spec: NetSpec
    follow_order: bool = True

    def generate(self, slots, *, sampler, steps, seed):
        classes = slots.class_id
        assert slots.prompts().shape[:2] == slots.mask.shape == classes.shape
        assert torch.equal(slots.mask, classes >= 0) and (slots.kind == NAME).all()
        rows = classes if self.follow_order else classes.sort(dim=1).values
        return torch.stack(
            [select_classifier(self.generic, c, self.spec_all, self.spec, seed) for c in rows]
        )


def make_context(toy, tasks: pd.DataFrame, follow_order: bool = True, **config) -> EvalContext:
    data, flat, spec_all = toy
    spec = NetSpec("cnn5k", K, head_only=False)
    tina = SelectionTina(flat, spec_all, spec, follow_order)
    meta = tasks.assign(
        acc_pmodel=0.9, acc_generic=0.5, seconds_per_model=0.25 + 0.01 * tasks["task_id"]
    )
    zoo = Zoo(torch.zeros(len(tasks), spec.num_params), torch.zeros(len(tasks), K), meta, spec)
    embeddings = {"names": torch.eye(N_CLASSES), "descriptions": -torch.eye(N_CLASSES)}
    return EvalContext(tina, data, tasks, zoo, embeddings, 0, EvalConfig(**config))


# --------------------------------------------------------------------------- records
def test_records_frame_has_the_record_columns_and_one_row_per_task():
    tasks = tasks_frame([[0, 1, 2], [3, 4, 5]]).assign(setting=["a", "b"])
    frame = records_frame("names", "tina", tasks, [0.5, 0.25], sample=2, seconds=0.1)
    assert list(frame.columns) == list(RECORD_COLUMNS)
    assert frame["setting"].tolist() == ["a", "b"] and frame["sample"].tolist() == [2, 2]
    assert frame["accuracy"].tolist() == [0.5, 0.25] and frame["seconds"].tolist() == [0.1, 0.1]
    check_records(frame)  # the reporting code accepts them
    with pytest.raises(ValueError, match="3 accuracies for 2 tasks"):
        records_frame("names", "tina", tasks, [0.1, 0.2, 0.3])


def test_reference_chance_and_majority_records_have_known_values(toy):
    tasks = tasks_frame([[0, 1, 2], [3, 4]], start=7).assign(setting="s")
    ctx = make_context(toy, tasks)
    refs = reference_records(ctx, "names", tasks)
    pmodel = refs[refs["method"] == "pmodel"]
    assert pmodel["accuracy"].tolist() == [0.9, 0.9]
    assert pmodel["seconds"].tolist() == pytest.approx([0.32, 0.33])
    generic = refs[refs["method"] == "generic_selection"]
    assert generic["accuracy"].tolist() == [0.5, 0.5] and generic["seconds"].isna().all()
    assert chance_records("names", tasks)["accuracy"].tolist() == pytest.approx([1 / 3, 1 / 2])
    # balanced toy data: always predicting one class is right for 1/k of the test images
    majority = majority_records(ctx, "names", tasks)["accuracy"].tolist()
    assert majority == pytest.approx([1 / 3, 1 / 2])
    with pytest.raises(ValueError, match=r"no p-model for tasks \[99\]"):
        reference_records(ctx, "names", tasks_frame([[0, 1]], start=99).assign(setting="s"))


def test_majority_picks_the_most_frequent_training_class():
    train = torch.tensor(
        [4, 4, 4, 2, 9, 9]
    )  # class 4 is the task's majority (class 9 is not in it)
    test = torch.tensor([2, 2, 2, 4, 4, 7])
    tasks = tasks_frame([[2, 4]]).assign(setting="s")
    data = SimpleNamespace(train_labels=train, test_labels=test)
    ctx = SimpleNamespace(dataset=data)
    assert majority_records(ctx, "x", tasks)["accuracy"].tolist() == [pytest.approx(2 / 5)]
    index, slots = task_slots(test, [2, 4])
    assert index.tolist() == [0, 1, 2, 3, 4] and slots.tolist() == [0, 0, 0, 1, 1]


def test_baseline_records_are_relabelled_and_must_cover_every_task():
    tasks = tasks_frame([[0, 1], [2, 3]]).assign(setting="baselines")
    baselines = pd.concat(
        records_frame("baselines", m, tasks, [0.1 * i, 0.2])
        for i, m in enumerate(("retrieval", "ridge", "hypernetwork"), 1)
    )
    wanted = tasks.assign(setting=["k=2", "k=3"])
    rows = baseline_records(baselines, "kway", wanted)
    assert set(rows["experiment"]) == {"kway"} and len(rows) == 6
    assert rows.loc[rows["task_id"] == 1, "setting"].unique().tolist() == ["k=3"]
    ridge = rows[(rows["method"] == "ridge") & (rows["task_id"] == 0)]
    assert ridge["accuracy"].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="rerun evaluate_baselines"):
        baseline_records(baselines, "kway", tasks_frame([[4, 5]], start=5).assign(setting="s"))


# --------------------------------------------------------------------------- prompts
def test_description_filter_drops_tasks_with_a_missing_description():
    tasks = tasks_frame([[0, 1, 2], [1, 3, 4], [2, 5]])
    has_description = torch.tensor([True, True, True, False, True, True])
    kept = describable_tasks(tasks, has_description)
    assert kept["task_id"].tolist() == [0, 2]


def test_description_slots_take_name_or_description_per_slot_by_a_seeded_coin():
    emb = {"names": torch.eye(6), "descriptions": -torch.eye(6)}
    classes = torch.tensor([[0, 1, 2], [3, 4, -1]] * 20)
    real = classes >= 0
    first = description_slots(classes, emb, 0.5, torch.Generator().manual_seed(3))
    again = description_slots(classes, emb, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(first.kind, again.kind) and torch.equal(first.text, again.text)
    assert torch.equal(first.class_id, classes) and torch.equal(first.mask, real)
    assert set(first.kind[real].unique().tolist()) == {NAME, DESCRIPTION}
    # a slot's text is its class's name or description row, as its kind says; padding is zero
    cid = classes.clamp(min=0)
    described = (first.kind == DESCRIPTION).unsqueeze(-1)
    rows = torch.where(described, emb["descriptions"][cid], emb["names"][cid])
    assert torch.equal(first.text[real], rows[real])
    assert torch.all(first.text[~real] == 0) and torch.all(first.prompts()[~real] == 0)
    share = (first.kind[real] == DESCRIPTION).float().mean().item()
    assert 0.3 < share < 0.7
    other = description_slots(classes, emb, 0.5, torch.Generator().manual_seed(4))
    assert not torch.equal(first.kind, other.kind)
    names = description_slots(classes, emb, 0.0, torch.Generator().manual_seed(3))
    everything = description_slots(classes, emb, 1.0, torch.Generator().manual_seed(3))
    assert (names.kind == NAME).all() and (everything.kind[real] == DESCRIPTION).all()
    assert torch.equal(names.text[real], emb["names"][classes[real]])
    assert torch.equal(everything.text[real], emb["descriptions"][classes[real]])


def test_task_shots_are_nested_seeded_shots_of_the_right_class():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)
    classes = torch.tensor([[1, 0, -1], [0, 1, -1]])
    one = task_shots([7, 8], classes, labels, 1, seed=0, stream="eval-shots")
    three = task_shots([7, 8], classes, labels, 3, seed=0, stream="eval-shots")
    assert one.shape == (2, 3, 1) and three.shape == (2, 3, 3)
    assert torch.equal(one, three[..., :1])  # fewer shots are a prefix of more
    real = classes >= 0
    assert torch.equal(labels[three][real], classes[real].unsqueeze(-1).expand(-1, 3))
    assert all(len(set(row.tolist())) == 3 for row in three[real])  # distinct images
    assert torch.equal(three, task_shots([7, 8], classes, labels, 3, 0, "eval-shots"))
    # the draw is seeded by (seed, stream, task, class): the same class differs across tasks
    assert not torch.equal(three[0, 1], three[1, 0])
    others = [task_shots([7, 8], classes, labels, 3, 1, "eval-shots"),
              task_shots([7, 8], classes, labels, 3, 0, "other")]  # fmt: skip
    assert all(not torch.equal(three[real], other[real]) for other in others)
    with pytest.raises(ValueError, match="class 2 has 2 training images but 3 shots"):
        task_shots([7], torch.tensor([[2, 0, -1]]), labels, 3, seed=0, stream="eval-shots")


def test_image_slots_average_the_shots_embeddings_into_unit_prompts():
    labels = torch.tensor([0] * 5 + [1] * 5)
    classes = torch.tensor([[1, 0, -1]])
    index = task_shots([7], classes, labels, 3, seed=0, stream="eval-shots")
    g = torch.Generator().manual_seed(0)
    bank, feats = torch.randn(len(labels), 6, generator=g), torch.randn(len(labels), 4, generator=g)
    for n in (1, 3):
        slots = image_slots(classes, index[..., :n], feats, bank, named=False)
        assert (slots.kind == IMAGES).all() and (slots.class_id == -1).all()
        assert torch.equal(slots.mask, classes >= 0)
        expected = F.normalize(bank[index[0, :2, :n]].mean(1), dim=-1)
        torch.testing.assert_close(slots.image[0, :2], expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(slots.prompts()[0, :2], expected, atol=1e-6, rtol=1e-5)
        assert torch.all(slots.image[0, 2] == 0)  # padding: no prompt
        assert slots.shot_count.tolist() == [[n, n, 0]]
        assert torch.equal(slots.shot_features[0, :2], feats[index[0, :2, :n]])
        assert torch.all(slots.shot_features[0, 2] == 0)
    named = image_slots(classes, index, feats, bank, named=True)
    assert torch.equal(named.class_id, classes)
    # a count below n uses only the first shots of each slot
    fewer = image_slots(classes, index, feats, bank, named=False, count=torch.tensor([[1, 3, 3]]))
    first_only = image_slots(classes, index[..., :1], feats, bank, named=False)
    torch.testing.assert_close(fewer.image[0, 0], first_only.image[0, 0])
    assert fewer.shot_count.tolist() == [[1, 3, 0]]  # padding slots count no shot
    assert torch.all(fewer.shot_features[0, 0, 1:] == 0)


def test_image_prompt_banks_embed_every_drawn_image_once():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)
    images = torch.arange(len(labels)).reshape(-1, 1, 1, 1).to(torch.uint8)
    seen = []

    def embed(batch):  # one-hot of the image index: the bank reveals which images were used
        seen.append(len(batch))
        return F.one_hot(batch.reshape(-1).long(), len(labels)).float()

    grounding = SimpleNamespace(features=lambda x: x.reshape(len(x), -1).float() * 10)
    ctx = SimpleNamespace(
        dataset=SimpleNamespace(train_images=images), tina=SimpleNamespace(grounding=grounding)
    )
    index = torch.tensor([[[5, 7, 9], [0, 3, 1]], [[1, 3, 0], [0, 4, 4]]])
    feats, bank = image_prompt_banks(ctx, embed, index)
    used = sorted(set(index.reshape(-1).tolist()))
    assert seen == [len(used)]  # each drawn image embedded once, in one call
    assert torch.equal(feats, torch.arange(len(labels)).float().unsqueeze(1) * 10)
    assert torch.equal(bank[used], F.one_hot(torch.tensor(used), len(labels)).float())
    unused = [i for i in range(len(labels)) if i not in used]
    assert torch.all(bank[unused] == 0)


# --------------------------------------------------------------------------- order
def test_order_permutations_start_with_the_identity_and_are_seeded():
    perms = order_permutations([3, 4], [5, 2], orders=3, seed=1)
    assert len(perms) == 3
    assert [p.tolist() for p in perms[0]] == [[0, 1, 2, 3, 4], [0, 1]]
    for row in perms[1:]:
        assert sorted(row[0].tolist()) == [0, 1, 2, 3, 4] and sorted(row[1].tolist()) == [0, 1]
    again = order_permutations([3, 4], [5, 2], orders=3, seed=1)
    pairs = [(a, b) for r, s in zip(perms, again, strict=True) for a, b in zip(r, s, strict=True)]
    assert all(torch.equal(a, b) for a, b in pairs)
    tasks = tasks_frame([[10, 11, 12]])
    permuted = permute_tasks(tasks, [torch.tensor([2, 0, 1])])
    assert permuted["class_ids"].tolist() == ["12 10 11"]
    assert permuted["class_names"].tolist() == ["c12;c10;c11"]


def test_order_relabelling_keeps_an_equivariant_generator_exact(toy):
    tasks = tasks_frame([[0, 1, 2], [3, 4, 5], [1, 3, 5], [0, 2, 4]])
    records = evaluate_order(make_context(toy, tasks, samples=2, orders=4))
    assert len(records) == 4 * 4 * 2 and set(records["setting"]) == {f"order={r}" for r in range(4)}
    table = records.pivot_table(index=["task_id", "sample"], columns="setting", values="accuracy")
    assert table["order=0"].mean() > 0.6  # the toy generic net does classify
    for r in range(1, 4):  # the permuted prompt and the permuted labels agree exactly
        assert table[f"order={r}"].tolist() == table["order=0"].tolist()
    # a generator that ignores the prompt's order loses accuracy once the labels are permuted
    blind = evaluate_order(make_context(toy, tasks, follow_order=False, samples=1, orders=4))
    blind_table = blind.pivot_table(index="task_id", columns="setting", values="accuracy")
    assert blind_table["order=0"].mean() == pytest.approx(table["order=0"].mean())
    assert blind_table.drop(columns="order=0").mean().mean() < table["order=0"].mean() - 0.2


# --------------------------------------------------------------------------- reporting
def test_main_table_markdown_shows_mean_std_and_count():
    rows = []
    for split, acc in (("test_id", [0.4, 0.6]), ("test_ood", [0.3, 0.3])):
        tasks = tasks_frame([[0, 1], [2, 3]], split=split).assign(setting="names")
        rows.append(records_frame("names", "tina", tasks, acc))
        rows.append(records_frame("names", "chance", tasks, [0.5, 0.5]))
    table = make_tables(pd.concat(rows))["names"]
    text = main_table_markdown(table)
    lines = text.strip().split("\n")
    assert lines[0] == "| method | test, in-distribution | test, out-of-distribution |"
    assert lines[2] == "| Tina | 50.0 ± 14.1 (2) | 30.0 ± 0.0 (2) |"
    assert lines[3] == "| chance | 50.0 ± 0.0 (2) | 50.0 ± 0.0 (2) |"


def test_eval_config_reads_lists_as_tuples():
    cfg = EvalConfig.from_config({"samples": 5, "shots": [1, 4], "noise_sigmas": [0.1]})
    assert cfg.samples == 5 and cfg.shots == (1, 4) and cfg.noise_sigmas == (0.1,)
    assert cfg.ddim_steps == 10 and not math.isnan(cfg.ridge_alpha)


def test_sampler_experiment_runs_every_sampler_on_the_first_sampler_tasks(toy):
    tasks = tasks_frame([[0, 1, 2], [3, 4, 5], [1, 3, 5]])
    ctx = make_context(toy, tasks, ddim_compare=(2, 5), sampler_tasks=2)
    ctx.tina.schedule = SimpleNamespace(T=7)
    records = evaluate_sampler(ctx)
    assert set(records["task_id"]) == {0, 1}  # the first two test-ID tasks only
    assert set(records["setting"]) == {"ddpm-7", "ddim-2", "ddim-5"}
    tina = records[records["method"] == "tina"]
    assert len(tina) == 3 * 2 and (tina["sample"] == 0).all()  # one sample per task and sampler
    every = make_context(toy, tasks, ddim_compare=(2,))  # sampler_tasks None: all tasks
    every.tina.schedule = SimpleNamespace(T=3)
    assert set(evaluate_sampler(every)["task_id"]) == {0, 1, 2}


def test_registry_lists_the_experiments_and_the_inputs_they_take():
    assert list(EXPERIMENTS) == [
        "names", "descriptions", "image_prompts", "kway", "unseen", "order", "sampler",
    ]  # fmt: skip
    assert [name for name, e in EXPERIMENTS.items() if e.baselines] == ["names", "kway", "unseen"]
    assert [name for name, e in EXPERIMENTS.items() if e.images] == ["image_prompts"]
    section = {"shots": [1, 4], "orders": 3, "samples": 2}
    messages = {name: e.message.format(**section) for name, e in EXPERIMENTS.items()}
    assert messages["image_prompts"] == "Evaluating image prompts with [1, 4] images per class"
    assert messages["order"] == "Evaluating 3 class orders per task"
    assert EXPERIMENTS["order"].run is evaluate_order
    assert EXPERIMENTS["sampler"].run is evaluate_sampler


# --------------------------------------------------------------------------- workflow
@pytest.mark.workflow
@pytest.mark.slow
def test_workflow_tiny_all(tiny_run):
    """The tiny config runs to `all` in a copy of the repository; the report builds."""
    snakemake = [sys.executable, "-m", "snakemake"]
    results = tiny_run / "results" / "test"
    summary = json.loads((results / "summary.json").read_text())
    for split in ("test_id", "test_ood"):
        for key in ("tina", "pmodel", "generic_selection", "retrieval", "hypernetwork", "chance"):
            assert 0.0 <= summary[split][key] <= 1.0, (split, key)
        assert summary[split]["count"]["tina"] > 0
    assert summary["seconds_per_generated_model"] > 0 and summary["stage_seconds"]["train_tina"] > 0
    assert set(summary["novelty"]) >= {"generated", "noise_sigma=0.05"}
    experiments = [
        "names", "descriptions", "image_prompts", "kway", "unseen", "order", "sampler",
        "scaling_tasks", "scaling_width", "scaling_net", "novelty",
    ]  # fmt: skip
    for experiment in experiments:
        for path in (f"tables/{experiment}.csv", f"tables/{experiment}.md"):
            assert (results / path).stat().st_size > 0, path
        for path in (f"figures/{experiment}.png", f"figures/{experiment}.svg"):
            assert (results / path).stat().st_size > 1000, path
    for name in ("performance", "stages"):
        assert (results / "tables" / f"{name}.csv").is_file()
    digest = (results / "results.md").read_text()
    assert "## Main result" in digest and "| Tina |" in digest
    report = subprocess.run(
        [*snakemake, "--report", "report.html", "all", "--configfile", "config/test.yaml"],
        cwd=tiny_run,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-4000:]
    html = (tiny_run / "report.html").read_text()
    assert "Accuracy of models generated from prompts" in html  # report/names.rst as caption
