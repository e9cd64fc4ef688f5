"""The experiments of the paper and their registry, :data:`EXPERIMENTS`: the single source of
the experiment list (the workflow's ``evaluate_experiment`` rule takes its names, inputs and
messages from it).

Each experiment maps an :class:`~tina.evaluate.context.EvalContext` (plus, where the registry
says so, the baselines' records or an image embedder) to records of
:mod:`tina.evaluate.records`; see :mod:`tina.evaluate` for the protocol they share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from tina import fewshot
from tina.evaluate.context import EvalContext, load_context, load_image_embedder
from tina.evaluate.records import (
    base_records,
    baseline_records,
    chance_records,
    majority_records,
    name_records,
    prompt_records,
    records_frame,
    reference_records,
)
from tina.grounding import DESCRIPTION, NAME, Slots, image_slots, task_shots
from tina.prompts import ImageEmbedder, embed_images
from tina.sampling import name_slots
from tina.seeding import derive_seed
from tina.tasks import class_ids

log = logging.getLogger("tina.evaluate")


def _standard_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame, baselines):
    """Tina with class names and its base (selection rows for known classes, the name mixture
    for unseen ones), the references, the baselines, chance and majority."""
    return pd.concat(
        [
            name_records(ctx, experiment, tasks),
            base_records(
                ctx, experiment, tasks, name_slots(ctx.classes(tasks), ctx.embeddings["names"])
            ),
            reference_records(ctx, experiment, tasks),
            baseline_records(baselines, experiment, tasks),
            chance_records(experiment, tasks),
            majority_records(ctx, experiment, tasks),
        ],
        ignore_index=True,
    )


# --------------------------------------------------------------------------- experiments
def evaluate_names(ctx: EvalContext, baselines: pd.DataFrame) -> pd.DataFrame:
    """Experiment 1: ID and OOD test tasks prompted with class names, against every baseline."""
    tasks = ctx.split("test_id", "test_ood").assign(setting="names")
    return _standard_records(ctx, "names", tasks, baselines)


def describable_tasks(tasks: pd.DataFrame, has_description: Tensor) -> pd.DataFrame:
    """The tasks all of whose classes have a description (others are left out, not invented)."""
    keep = [bool(has_description[ids].all()) for ids in class_ids(tasks)]
    return tasks[keep].reset_index(drop=True)


def description_slots(classes: Tensor, emb: dict[str, Tensor], share: float, g) -> Slots:
    """Slots of tasks ``classes [T, k]`` each of whose classes is given by its description with
    probability ``share`` (a seeded coin; 1: all descriptions, 0: all names)."""
    mask = classes >= 0
    cid = classes.clamp(min=0)
    coin = torch.rand(classes.shape, generator=g) < share
    kind = torch.where(coin, DESCRIPTION, NAME)
    text = torch.where(coin.unsqueeze(-1), emb["descriptions"][cid], emb["names"][cid])
    return Slots(kind=kind, class_id=classes, mask=mask, text=text * mask.unsqueeze(-1))


def evaluate_descriptions(ctx: EvalContext) -> pd.DataFrame:
    """Experiment 2: prompts of WordNet descriptions, names, or a seeded mix (prompt only: a
    description's base is the description mixture of the known rows), each with its base."""
    emb = ctx.embeddings
    tasks = describable_tasks(ctx.split("test_id", "test_ood"), emb["has_description"])
    if tasks.empty:
        raise ValueError(
            "no test task has a description for all of its classes: the description "
            "experiment needs classes with WordNet glosses (or data.descriptions)"
        )
    classes = ctx.classes(tasks)
    mixed_generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "eval", "mixed"))
    shares = {"names": 0.0, "descriptions": 1.0, "mixed": 0.5}
    frames = []
    for setting, share in shares.items():
        part = tasks.assign(setting=setting)
        slots = description_slots(classes, emb, share, mixed_generator)
        frames.append(prompt_records(ctx, "descriptions", part, slots))
        frames.append(reference_records(ctx, "descriptions", part))
    log.info("descriptions: %d test tasks with a description for every class", len(tasks))
    return pd.concat(frames, ignore_index=True)


def image_prompt_banks(
    ctx: EvalContext, embed: ImageEmbedder, index: Tensor
) -> tuple[Tensor, Tensor]:
    """The generic features ``[N, F]`` of every training image and the image prompts ``[N, D]``
    of those at ``index`` (the shots drawn; other rows zero): each image embedded once."""
    images = ctx.dataset.train_images
    features = ctx.tina.grounding.features(images)
    union = index.reshape(-1).unique()
    prompts = embed_images(embed, images[union])
    bank = torch.zeros(len(images), prompts.shape[1])
    bank[union] = prompts
    return features, bank


def _logistic(ctx: EvalContext, slots: Slots, l2: float) -> Tensor:
    """Nets ``[T, P]``: the generic body with a logistic head fitted on the shots of ``slots``."""
    return ctx.tina.codec.base_from_rows(fewshot.logistic_head(slots, l2=l2), slots.mask)


def _finetuned(ctx: EvalContext, start: Slots, index: Tensor, lr: float) -> Tensor:
    """Nets ``[T, P]``: the grounded base of ``start`` fine-tuned on the shots ``index``,
    augmented as Tina's functional loss augments the training images (``functional_augment``:
    colour shuffles only where the run says colour is no class cue); head-only nets train their
    head on the generic body."""
    params = ctx.tina.base(start)
    return fewshot.finetune_on_shots(
        params, ctx.tina.spec, ctx.dataset.train_images, index, start.mask, lr=lr,
        augment_mode=ctx.tina.config.functional_augment, seed=ctx.seed, body=ctx.body(),
    )  # fmt: skip


def choose_shot_baselines(
    ctx: EvalContext, val: pd.DataFrame, index: Tensor, features: Tensor
) -> tuple[float, float]:
    """The logistic head's L2 weight and the fine-tuning learning rate for shots ``index`` of
    the validation tasks ``val`` (from the training images), chosen on the validation images."""
    classes = ctx.classes(val)
    alone = image_slots(classes, index, features, named=False)
    start = with_names(alone, classes) if ctx.tina.grounding.settings.keep_known_rows else alone
    n = index.shape[-1]
    l2, _ = fewshot.choose(
        fewshot.L2_GRID,
        lambda l2: ctx.score_val(_logistic(ctx, alone, l2), val).mean(),
        f"logistic head L2 weight ({n} shots)",
    )
    lr, _ = fewshot.choose(
        fewshot.LR_GRID,
        lambda lr: ctx.score_val(_finetuned(ctx, start, index, lr), val).mean(),
        f"fine-tuning learning rate ({n} shots)",
    )
    return l2, lr


def with_names(slots: Slots, classes: Tensor) -> Slots:
    """Image ``slots`` that also name their classes ``classes [T, k]``."""
    out = slots.map(lambda x: x)
    out.class_id = classes
    return out


def evaluate_image_prompts(ctx: EvalContext, embed: ImageEmbedder) -> pd.DataFrame:
    """Experiment 3: prompts of k-shot class images, for each ``shots`` value.

    Each class's shots are the first ``shots`` of a permutation of its training images seeded
    by ``(seed, task, class)`` (fewer shots are a prefix of more). Tina gets the images, and the
    class ids where the grounding keeps known rows (``keep_known_rows``: images given with
    names); its base and the baselines get the same shots: ``imprint`` (images alone),
    ``imprint_selection`` (with names), a logistic head and fine-tuning on the shots, whose L2
    weight and learning rate are chosen per shot count on the validation tasks (shots from the
    training images, scored on the validation images).
    """
    tasks = ctx.split("test_id", "test_ood")
    val = ctx.split("val")
    classes, val_classes = ctx.classes(tasks), ctx.classes(val)
    labels, shots = ctx.dataset.train_labels, ctx.config.shots
    index = task_shots(
        tasks["task_id"].tolist(), classes, labels, max(shots), ctx.seed, "eval-shots"
    )
    val_index = task_shots(
        val["task_id"].tolist(), val_classes, labels, max(shots), ctx.seed, "eval-val-shots"
    )
    features, bank = image_prompt_banks(
        ctx, embed, torch.cat([index.flatten(), val_index.flatten()])
    )
    keep = ctx.tina.grounding.settings.keep_known_rows
    frames = []
    for n in shots:
        l2, lr = choose_shot_baselines(ctx, val, val_index[..., :n], features)
        part = tasks.assign(setting=f"shots={n}")
        alone = image_slots(classes, index[..., :n], features, bank, named=False)
        named = with_names(alone, classes)
        start = named if keep else alone
        frames += [
            prompt_records(ctx, "image_prompts", part, start),
            base_records(ctx, "image_prompts", part, alone, "imprint"),
            base_records(ctx, "image_prompts", part, named, "imprint_selection"),
            records_frame(
                "image_prompts", "logistic_head", part, ctx.score(_logistic(ctx, alone, l2), part)
            ),
            records_frame(
                "image_prompts",
                "finetune_shots",
                part,
                ctx.score(_finetuned(ctx, start, index[..., :n], lr), part),
            ),
            reference_records(ctx, "image_prompts", part),
        ]
    return pd.concat(frames, ignore_index=True)


def evaluate_kway(ctx: EvalContext, baselines: pd.DataFrame) -> pd.DataFrame:
    """Experiment 4: tasks of k' < k classes (padded) and the k-way test-ID tasks."""
    tasks = ctx.split("test_kway", "test_id")
    tasks = tasks.assign(setting=[f"k={k}" for k in tasks["k"]])
    return _standard_records(ctx, "kway", tasks, baselines)


def evaluate_unseen(ctx: EvalContext, baselines: pd.DataFrame) -> pd.DataFrame:
    """Experiment 5: tasks by their number of unseen classes (test-ID tasks have none)."""
    tasks = ctx.split("test_id", "test_ood")
    tasks = tasks.assign(setting=[f"unseen={n}" for n in tasks["n_unseen"]])
    return _standard_records(ctx, "unseen", tasks, baselines)


def order_permutations(task_ids: Sequence[int], ks: Sequence[int], orders: int, seed: int):
    """Per order ``r`` a list of per-task permutations; order 0 is the identity.

    Order ``r`` of a task is seeded by ``(seed, task id, r)``.
    """
    perms = [[torch.arange(k) for k in ks]]
    for r in range(1, orders):
        row = []
        for task_id, k in zip(task_ids, ks, strict=True):
            g = torch.Generator().manual_seed(derive_seed(seed, "eval", "order", task_id, r))
            row.append(torch.randperm(int(k), generator=g))
        perms.append(row)
    return perms


def permute_tasks(tasks: pd.DataFrame, perms: Sequence[Tensor]) -> pd.DataFrame:
    """``tasks`` with each task's classes reordered: new slot ``j`` holds old slot ``perm[j]``."""
    out = tasks.copy()
    ids = class_ids(tasks)
    out["class_ids"] = [
        " ".join(str(row[int(p)]) for p in perm) for row, perm in zip(ids, perms, strict=True)
    ]
    if "class_names" in out.columns:
        names = [str(value).split(";") for value in tasks["class_names"]]
        out["class_names"] = [
            ";".join(row[int(p)] for p in perm) for row, perm in zip(names, perms, strict=True)
        ]
    return out


def evaluate_order(ctx: EvalContext) -> pd.DataFrame:
    """Experiment 6: test-ID tasks under permutations of their class order.

    Every order uses the same sampler seeds, so orders differ in the order alone; each order is
    scored with the task's labels permuted the same way.
    """
    tasks = ctx.split("test_id")
    perms = order_permutations(
        tasks["task_id"].tolist(), tasks["k"].tolist(), ctx.config.orders, ctx.seed
    )
    frames = []
    for r, order in enumerate(perms):
        permuted = permute_tasks(tasks, order).assign(setting=f"order={r}")
        frames.append(name_records(ctx, "order", permuted))
    return pd.concat(frames, ignore_index=True)


def evaluate_sampler(ctx: EvalContext) -> pd.DataFrame:
    """Experiment 8: full DDPM sampling against DDIM with few steps (one sample per task), on
    the first ``sampler_tasks`` test-ID tasks (all when None): DDPM runs every timestep."""
    tasks = ctx.split("test_id").head(ctx.config.sampler_tasks)
    timesteps = ctx.tina.schedule.T
    samplers = [("ddpm", timesteps)] + [("ddim", n) for n in ctx.config.ddim_compare]
    frames = []
    for sampler, steps in samplers:
        part = tasks.assign(setting=f"{sampler}-{steps}")
        frames.append(name_records(ctx, "sampler", part, samples=1, sampler=sampler, steps=steps))
        frames.append(reference_records(ctx, "sampler", part))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Experiment:
    """One experiment: its function and what its workflow job needs besides the common inputs.

    ``baselines``: the function takes the baselines' records (``eval/baselines/records.csv``);
    ``images``: it takes an image embedder (the run's encoder and image projection).
    ``message`` is the job's message, formatted with the ``evaluate`` config section;
    ``category`` names the experiment's group in the workflow's HTML report.
    """

    run: Callable[..., pd.DataFrame]
    message: str
    category: str
    baselines: bool = False
    images: bool = False


#: Every experiment with one records file ``eval/<name>.csv``, in the paper's order.
EXPERIMENTS: dict[str, Experiment] = {
    "names": Experiment(
        evaluate_names,
        "Evaluating class-name prompts on ID and OOD test tasks",
        "Class-name prompts",
        baselines=True,
    ),
    "descriptions": Experiment(
        evaluate_descriptions, "Evaluating description prompts", "Description prompts"
    ),
    "image_prompts": Experiment(
        evaluate_image_prompts,
        "Evaluating image prompts with {shots} images per class",
        "Image prompts",
        images=True,
    ),
    "kway": Experiment(
        evaluate_kway,
        "Evaluating tasks with fewer classes than the net has slots",
        "Fewer classes (k-way)",
        baselines=True,
    ),
    "unseen": Experiment(
        evaluate_unseen,
        "Evaluating tasks by their number of unseen classes",
        "Unseen classes",
        baselines=True,
    ),
    "order": Experiment(evaluate_order, "Evaluating {orders} class orders per task", "Class order"),
    "sampler": Experiment(evaluate_sampler, "Comparing DDPM with DDIM sampling", "Sampler"),
}


def experiment_records(
    experiment: str,
    inputs,
    section: dict,
    seed: int,
    device: str = "cpu",
    encoder: dict | None = None,
) -> pd.DataFrame:
    """One experiment's records from a workflow rule's ``inputs`` (as for
    :func:`~tina.evaluate.context.load_context`): the baselines' records are read from
    ``inputs.baselines`` and image prompts are embedded through ``encoder`` (the config section)
    and ``inputs.projection`` where the registry says the experiment takes them."""
    ctx = load_context(inputs, section, seed, device=device)
    extra = {}
    if EXPERIMENTS[experiment].baselines:
        extra["baselines"] = pd.read_csv(inputs.baselines)
    if EXPERIMENTS[experiment].images:
        extra["embed"] = load_image_embedder(ctx.tina, encoder, inputs.projection)
    return run_experiment(experiment, ctx, **extra)


def summarise_records(records: pd.DataFrame) -> str:
    """One log line per (setting, method): mean task accuracy."""
    per_task = records.groupby(["setting", "method", "task_id"])["accuracy"].mean()
    means = per_task.groupby(["setting", "method"]).mean()
    return "; ".join(f"{s}/{m} {v:.3f}" for (s, m), v in means.items())


def run_experiment(experiment: str, ctx: EvalContext, **inputs) -> pd.DataFrame:
    """Run one experiment by name and log its mean accuracies."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {list(EXPERIMENTS)}")
    start = time.perf_counter()
    records = EXPERIMENTS[experiment].run(ctx, **inputs)
    log.info(
        "%s: %d records in %.1f s: %s",
        experiment,
        len(records),
        time.perf_counter() - start,
        summarise_records(records),
    )
    return records
