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
import torch.nn.functional as F
from torch import Tensor

from tina.evaluate.context import EvalContext, load_context, load_image_embedder
from tina.evaluate.records import (
    baseline_records,
    chance_records,
    majority_records,
    name_records,
    reference_records,
    tina_records,
)
from tina.prompts import ImageEmbedder
from tina.sampling import task_prompts
from tina.seeding import derive_seed
from tina.tasks import class_ids

log = logging.getLogger("tina.evaluate")


def _standard_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame, baselines):
    """Tina with class names, the references, the baselines, chance and majority."""
    return pd.concat(
        [
            name_records(ctx, experiment, tasks),
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


def mixed_prompts(
    classes: Tensor, names: Tensor, descriptions: Tensor, generator: torch.Generator
) -> Tensor:
    """Prompts ``[T, k, D]`` whose every slot is its class's name or description (a fair coin)."""
    coin = torch.rand(classes.shape, generator=generator) < 0.5
    name_prompts = task_prompts(classes, names)[0]
    description_prompts = task_prompts(classes, descriptions)[0]
    return torch.where(coin.unsqueeze(-1), description_prompts, name_prompts)


def evaluate_descriptions(ctx: EvalContext) -> pd.DataFrame:
    """Experiment 2: prompts of WordNet descriptions, names, or a seeded mix (prompt only)."""
    emb = ctx.embeddings
    tasks = describable_tasks(ctx.split("test_id", "test_ood"), emb["has_description"])
    if tasks.empty:
        raise ValueError(
            "no test task has a description for all of its classes: the description "
            "experiment needs classes with WordNet glosses (or data.descriptions)"
        )
    classes = ctx.classes(tasks)
    mixed_generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "eval", "mixed"))
    prompts = {
        "names": task_prompts(classes, emb["names"])[0],
        "descriptions": task_prompts(classes, emb["descriptions"])[0],
        "mixed": mixed_prompts(classes, emb["names"], emb["descriptions"], mixed_generator),
    }
    frames = []
    for setting, prompt in prompts.items():
        part = tasks.assign(setting=setting)
        frames.append(tina_records(ctx, "descriptions", part, prompt, None))
        frames.append(reference_records(ctx, "descriptions", part))
    log.info("descriptions: %d test tasks with a description for every class", len(tasks))
    return pd.concat(frames, ignore_index=True)


def image_prompts(
    classes: Tensor,
    task_ids: Sequence[int],
    labels: Tensor,
    images: Tensor,
    shots: Sequence[int],
    embed: ImageEmbedder,
    seed: int,
) -> dict[int, Tensor]:
    """k-shot image prompts ``{shots: [T, k, D]}`` from the training images of each class.

    Slot ``j`` of task ``t`` takes the first ``shots`` of a permutation of its class's training
    images seeded by ``(seed, task id, class id)``, so the images of fewer shots are a subset of
    those of more shots; the prompt is the mean of their embeddings, scaled to unit length.
    Padding slots get a zero prompt. Every image is embedded once.
    """
    largest = max(shots)
    chosen: dict[tuple[int, int], Tensor] = {}
    for t, task_id in enumerate(task_ids):
        for j, class_id in enumerate(classes[t].tolist()):
            if class_id < 0:
                continue
            pool = torch.nonzero(labels == class_id).squeeze(1)
            if len(pool) < largest:
                raise ValueError(
                    f"class {class_id} has {len(pool)} training images but evaluate.shots asks "
                    f"for {largest}; lower evaluate.shots"
                )
            g = torch.Generator().manual_seed(derive_seed(seed, "eval", "shots", task_id, class_id))
            chosen[(t, j)] = pool[torch.randperm(len(pool), generator=g)[:largest]]
    union = torch.cat(list(chosen.values())).unique()
    embedded = embed(images[union]).float()
    out = {}
    for n in shots:
        prompts = torch.zeros(*classes.shape, embedded.shape[1])
        for (t, j), index in chosen.items():
            rows = torch.searchsorted(union, index[:n])
            prompts[t, j] = F.normalize(embedded[rows].mean(0), dim=0)
        out[n] = prompts
    return out


def evaluate_image_prompts(ctx: EvalContext, embed: ImageEmbedder) -> pd.DataFrame:
    """Experiment 3: prompts of k-shot class images (prompt only), for each ``shots`` value."""
    tasks = ctx.split("test_id", "test_ood")
    classes = ctx.classes(tasks)
    data = ctx.dataset
    prompts = image_prompts(
        classes,
        tasks["task_id"].tolist(),
        data.train_labels,
        data.train_images,
        ctx.config.shots,
        embed,
        ctx.seed,
    )
    frames = []
    for shots, prompt in prompts.items():
        part = tasks.assign(setting=f"shots={shots}")
        frames.append(tina_records(ctx, "image_prompts", part, prompt, None))
        frames.append(reference_records(ctx, "image_prompts", part))
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
