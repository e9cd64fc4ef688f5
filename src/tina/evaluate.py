"""Evaluation of a trained Tina against its baselines: one function per experiment of the paper.

Every experiment returns *records* in the format of :mod:`tina.report`: one row per (method,
setting, task, sample) with columns ``experiment, setting, method, split, task_id, k, sample,
accuracy, seconds``; accuracies are fractions in [0, 1] on the task's test images, ``seconds``
the time to produce one model (NaN where not measured).

Protocol, shared by all experiments:

- Tina draws ``samples`` nets per task. Sample ``s`` of every task of a setting comes from one
  batched :meth:`Tina.generate` call seeded ``derive_seed(seed, "eval", experiment, s)``: the
  seed is the same for every setting of an experiment, so settings that batch the same tasks
  are compared under the same sampler noise (paired), and the class-order experiment changes
  nothing but the order. ``seconds`` is the batched generation time divided by the tasks.
- Class-name prompts carry their class ids (the names match the data set's classes, as
  ``tina generate`` does), so Tina starts from the generic rows of seen classes. Descriptions
  and image prompts carry no class id: Tina gets the prompt alone (neutral base rows), and the
  description experiment runs class names the same way (setting ``names``) for reference.
- ``pmodel`` (the fine-tuned p-model of the very test task, never shown to Tina: the upper
  bound) and ``generic_selection`` (the generic model with classifier selection) come from the
  zoo's table; ``chance`` is 1/k; ``majority`` always predicts the task's most frequent class
  in its training images, scored on its test images.
- ``retrieval``, ``ridge`` and ``hypernetwork`` are deterministic functions of the class names:
  :func:`evaluate_baselines` scores them once on every test task, and the experiments that
  report them pick their tasks' rows (:func:`baseline_records`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from tina.baselines import Ridge, hypernetwork_predict, retrieve, train_hypernetwork
from tina.config import from_section
from tina.metrics import majority_accuracy
from tina.nets import split_body
from tina.report import RECORD_COLUMNS
from tina.shards import Zoo
from tina.train import Tina, task_prompts
from tina.zoo import derive_seed, evaluate, task_classes

log = logging.getLogger("tina.evaluate")

EXPERIMENTS = ("names", "descriptions", "image_prompts", "kway", "unseen", "order", "sampler")
TEST_SPLITS = ("test_id", "test_ood", "test_kway")
REFERENCES = ("pmodel", "generic_selection")
BASELINES = ("retrieval", "ridge", "hypernetwork")

ImageEmbedder = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EvalConfig:
    """The ``evaluate`` config section (defaults are the schema's)."""

    samples: int = 3
    ddim_steps: int = 10
    shots: tuple[int, ...] = (1, 2, 4, 8)
    orders: int = 4
    ddim_compare: tuple[int, ...] = (5, 10, 25)
    sampler_tasks: int | None = None
    hypernetwork_steps: int = 300
    ridge_alpha: float = 1.0
    noise_sigmas: tuple[float, ...] = (0.01, 0.05, 0.1)
    noise_pmodels: int = 40

    @classmethod
    def from_config(cls, section: dict) -> EvalConfig:
        return from_section(cls, section)


@dataclass
class EvalContext:
    """Everything an experiment reads: the trained Tina, the data, the tasks and the zoo.

    ``zoo`` holds the p-models of the training tasks (what the baselines learn from) and of the
    test tasks (the ``pmodel`` reference); ``embeddings`` the ``names``, ``descriptions`` and
    ``has_description`` tensors of :func:`tina.prompts.load_embeddings`.
    """

    tina: Tina
    dataset: object  # tina.data.Dataset (train/test images and labels)
    tasks: pd.DataFrame
    zoo: Zoo
    embeddings: dict[str, Tensor]
    seed: int
    config: EvalConfig

    @property
    def k(self) -> int:
        """Class slots of the generated nets (the largest task)."""
        return self.tina.spec.num_classes

    def split(self, *splits: str) -> pd.DataFrame:
        """The tasks of ``splits``, in task-table order; an error when there are none."""
        chosen = self.tasks[self.tasks["split"].isin(splits)].reset_index(drop=True)
        if chosen.empty:
            raise ValueError(
                f"the task table has no tasks of split(s) {list(splits)}: raise their counts "
                "in the config's tasks section"
            )
        return chosen

    def classes(self, tasks: pd.DataFrame) -> Tensor:
        """Class ids ``[T, k]`` of ``tasks`` in prompt order, padded with -1."""
        return task_classes(tasks, self.k)

    def training_pmodels(self) -> tuple[Tensor, Tensor]:
        """Parameters ``[N, P]`` and classes ``[N, k]`` of the training tasks' p-models."""
        train = torch.as_tensor((self.zoo.meta["split"] == "train").to_numpy())
        if not bool(train.any()):
            raise ValueError("the zoo holds no p-model of a training task")
        return self.zoo.params[train], self.zoo.classes[train]

    def body(self) -> Tensor | None:
        """The generic body that head-only nets run on (None for full nets)."""
        if not self.tina.spec.head_only:
            return None
        return split_body(self.tina.codec.generic, self.tina.codec.spec_all)[0]

    def score(self, params: Tensor, tasks: pd.DataFrame) -> Tensor:
        """Accuracy ``[T]`` of nets ``params [T, P]`` on the test images of ``tasks``."""
        data = self.dataset
        return evaluate(
            params, tasks, data.test_images, data.test_labels, self.tina.spec, self.body()
        )


# --------------------------------------------------------------------------- records
def records_frame(
    experiment: str,
    method: str,
    tasks: pd.DataFrame,
    accuracy,
    *,
    sample: int = 0,
    seconds=math.nan,
) -> pd.DataFrame:
    """Records of one method on ``tasks`` (whose ``setting`` column names each task's setting).

    ``accuracy`` has one value per task; ``seconds`` is one value or one per task.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if len(accuracy) != len(tasks):
        raise ValueError(f"{len(accuracy)} accuracies for {len(tasks)} tasks")
    frame = pd.DataFrame(
        {
            "experiment": experiment,
            "setting": tasks["setting"].to_numpy(),
            "method": method,
            "split": tasks["split"].to_numpy(),
            "task_id": tasks["task_id"].to_numpy(dtype=np.int64),
            "k": tasks["k"].to_numpy(dtype=np.int64),
            "sample": sample,
            "accuracy": accuracy,
            "seconds": np.broadcast_to(np.asarray(seconds, dtype=np.float64), len(tasks)),
        }
    )
    return frame[list(RECORD_COLUMNS)]


def generate(
    ctx: EvalContext,
    experiment: str,
    prompts: Tensor,
    mask: Tensor,
    classes: Tensor | None,
    *,
    samples: int | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
) -> list[tuple[Tensor, float]]:
    """Tina's nets for a batch of prompts: one ``(params [T, P], seconds per net)`` per sample.

    Sample ``s`` is seeded ``derive_seed(seed, "eval", experiment, s)`` whatever the batch.
    """
    out = []
    for sample in range(ctx.config.samples if samples is None else samples):
        start = time.perf_counter()
        params = ctx.tina.generate(
            prompts,
            mask,
            classes,
            sampler=sampler,
            steps=steps or ctx.config.ddim_steps,
            seed=derive_seed(ctx.seed, "eval", experiment, sample),
        )
        out.append((params, (time.perf_counter() - start) / len(prompts)))
    return out


def tina_records(
    ctx: EvalContext,
    experiment: str,
    tasks: pd.DataFrame,
    prompts: Tensor,
    classes: Tensor | None,
    **sampling,
) -> pd.DataFrame:
    """Records of Tina's samples for ``tasks`` with ``prompts [T, k, D]``.

    ``classes`` gives Tina the class ids of the slots (None: the prompt alone).
    """
    mask = ctx.classes(tasks) >= 0
    frames = [
        records_frame(
            experiment, "tina", tasks, ctx.score(params, tasks), sample=sample, seconds=seconds
        )
        for sample, (params, seconds) in enumerate(
            generate(ctx, experiment, prompts, mask, classes, **sampling)
        )
    ]
    return pd.concat(frames, ignore_index=True)


def name_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame, **sampling):
    """Tina's records for ``tasks`` prompted with their class names (class ids included)."""
    classes = ctx.classes(tasks)
    prompts, _ = task_prompts(classes, ctx.embeddings["names"])
    return tina_records(ctx, experiment, tasks, prompts, classes, **sampling)


def reference_records(
    ctx: EvalContext, experiment: str, tasks: pd.DataFrame, methods: Sequence[str] = REFERENCES
) -> pd.DataFrame:
    """Fine-tuned p-model and generic-selection accuracy of ``tasks`` from the zoo's table."""
    meta = ctx.zoo.meta.drop_duplicates("task_id").set_index("task_id")
    missing = sorted(set(tasks["task_id"]) - set(meta.index))
    if missing:
        raise ValueError(
            f"the zoo has no p-model for tasks {missing[:5]}: finetune_pmodels must cover every "
            "task of the task table"
        )
    rows = meta.loc[tasks["task_id"]]
    columns = {
        "pmodel": ("acc_pmodel", rows["seconds_per_model"].to_numpy()),
        "generic_selection": ("acc_generic", math.nan),
    }
    frames = [
        records_frame(
            experiment,
            method,
            tasks,
            rows[columns[method][0]].to_numpy(),
            seconds=columns[method][1],
        )
        for method in methods
    ]
    return pd.concat(frames, ignore_index=True)


def chance_records(experiment: str, tasks: pd.DataFrame) -> pd.DataFrame:
    """Uniform guessing: accuracy 1/k of each task."""
    return records_frame(experiment, "chance", tasks, 1.0 / tasks["k"].to_numpy(dtype=float))


def task_slots(labels: Tensor, class_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Indices of the items whose label is one of ``class_ids`` and their slot (prompt position)."""
    ids = torch.as_tensor(list(class_ids), dtype=torch.long)
    match = labels.reshape(-1, 1) == ids.reshape(1, -1)
    index = torch.nonzero(match.any(dim=1)).squeeze(1)
    return index, match[index].int().argmax(dim=1)


def class_id_lists(tasks: pd.DataFrame) -> list[list[int]]:
    """The ordered class ids of every task (no padding)."""
    return [[int(c) for c in str(value).split()] for value in tasks["class_ids"]]


def majority_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame) -> pd.DataFrame:
    """Always the class most frequent among the task's training images, on its test images."""
    data = ctx.dataset
    accuracy = []
    for ids in class_id_lists(tasks):
        _, train_slots = task_slots(data.train_labels, ids)
        _, test_slots = task_slots(data.test_labels, ids)
        accuracy.append(majority_accuracy(test_slots, train_slots))
    return records_frame(experiment, "majority", tasks, accuracy)


# --------------------------------------------------------------------------- baselines
def evaluate_baselines(ctx: EvalContext) -> pd.DataFrame:
    """Retrieval, ridge and hypernetwork on every test task, prompted with class names.

    All three learn from the training p-models only. ``seconds`` is the time to produce one
    net (training the regressors is not counted, like Tina's training).
    """
    tasks = ctx.split(*TEST_SPLITS).assign(setting="names")
    names = ctx.embeddings["names"]
    params, classes = ctx.training_pmodels()
    query = ctx.classes(tasks)
    ridge = Ridge(ctx.tina.codec, names, ctx.tina.known, alpha=ctx.config.ridge_alpha)
    ridge.fit(params, classes)
    hypernetwork = train_hypernetwork(
        ctx.tina, params, classes, names, steps=ctx.config.hypernetwork_steps, seed=ctx.seed
    )
    predictors = {
        "retrieval": lambda: retrieve(query, params, classes, names, ctx.tina.spec),
        "ridge": lambda: ridge.predict(query),
        "hypernetwork": lambda: hypernetwork_predict(hypernetwork, ctx.tina, query, names),
    }
    frames = []
    for method, predict in predictors.items():
        start = time.perf_counter()
        with torch.no_grad():
            nets = predict()
        seconds = (time.perf_counter() - start) / len(tasks)
        accuracy = ctx.score(nets, tasks)
        log.info("%s: mean accuracy %.4f on %d test tasks", method, accuracy.mean(), len(tasks))
        frames.append(records_frame("baselines", method, tasks, accuracy, seconds=seconds))
    return pd.concat(frames, ignore_index=True)


def baseline_records(baselines: pd.DataFrame, experiment: str, tasks: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`evaluate_baselines` for ``tasks``, relabelled for ``experiment``."""
    settings = dict(zip(tasks["task_id"], tasks["setting"], strict=True))
    rows = baselines[baselines["task_id"].isin(settings)]
    counts = rows.groupby("method")["task_id"].nunique().reindex(BASELINES, fill_value=0)
    if (counts < len(settings)).any():
        raise ValueError(
            f"the baseline records cover {counts.to_dict()} of {len(settings)} tasks: rerun "
            "evaluate_baselines on the current task table"
        )
    rows = rows.assign(experiment=experiment, setting=rows["task_id"].map(settings))
    return rows[list(RECORD_COLUMNS)].reset_index(drop=True)


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
    keep = [bool(has_description[ids].all()) for ids in class_id_lists(tasks)]
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


def image_embedder(tina: Tina, encoder: dict, projection_path) -> ImageEmbedder:
    """Image prompt embeddings in the text space: the encoder's image tower where it has one
    (CLIP), else the fitted projection of the generic net's pooled features (MiniLM)."""
    from tina.encoders import encode_image_prompts, load_encoder, load_projection
    from tina.prompts import generic_features

    if encoder["name"].startswith("clip"):
        model = load_encoder(
            encoder["name"], path=encoder["path"], allow_download=encoder["allow_download"]
        )
        return lambda images: encode_image_prompts(model, images)
    projection = load_projection(projection_path)
    if projection.out_dim != tina.model.prompt_dim:
        raise ValueError(
            f"image projection {projection_path} maps to dim {projection.out_dim} but Tina's "
            f"prompts have dim {tina.model.prompt_dim}: refit the projection for this encoder"
        )
    codec = tina.codec

    @torch.inference_mode()
    def embed(images: Tensor) -> Tensor:
        return projection(generic_features(codec.generic, codec.spec_all, images))

    return embed


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
    ids = class_id_lists(tasks)
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


# --------------------------------------------------------------------------- loading
def load_context(
    inputs, section: dict, seed: int, tina: Tina | None = None, device: str = "cpu"
) -> EvalContext:
    """The context of a workflow rule: ``inputs`` names dataset, classes, tasks, zoo shards,
    embeddings and (unless ``tina`` is given) the Tina checkpoint, whose transformer samples on
    ``device`` (the config's ``auto``, ``cpu`` or ``cuda``)."""
    from tina.data import load_dataset
    from tina.device import pick_device
    from tina.prompts import load_embeddings
    from tina.shards import load_zoo
    from tina.tasks import read_tasks
    from tina.train import load_tina

    tina = tina if tina is not None else load_tina(inputs.tina)
    tina.model.to(pick_device(device))
    return EvalContext(
        tina=tina,
        dataset=load_dataset(inputs.dataset, inputs.classes),
        tasks=read_tasks(inputs.tasks),
        zoo=load_zoo(list(inputs.zoo)),
        embeddings=load_embeddings(inputs.embeddings),
        seed=seed,
        config=EvalConfig.from_config(section),
    )


def experiment_records(
    experiment: str,
    inputs,
    section: dict,
    seed: int,
    device: str = "cpu",
    encoder: dict | None = None,
) -> pd.DataFrame:
    """One experiment's records from a workflow rule's ``inputs`` (as for :func:`load_context`):
    the baselines' records are read where the rule has ``inputs.baselines``; image prompts are
    embedded through ``encoder`` (the config section) and ``inputs.projection``."""
    ctx = load_context(inputs, section, seed, device=device)
    extra = {}
    if hasattr(inputs, "baselines"):
        extra["baselines"] = pd.read_csv(inputs.baselines)
    if experiment == "image_prompts":
        extra["embed"] = image_embedder(ctx.tina, encoder, inputs.projection)
    return run_experiment(experiment, ctx, **extra)


def summarise_records(records: pd.DataFrame) -> str:
    """One log line per (setting, method): mean task accuracy."""
    per_task = records.groupby(["setting", "method", "task_id"])["accuracy"].mean()
    means = per_task.groupby(["setting", "method"]).mean()
    return "; ".join(f"{s}/{m} {v:.3f}" for (s, m), v in means.items())


def run_experiment(experiment: str, ctx: EvalContext, **inputs) -> pd.DataFrame:
    """Run one experiment by name and log its mean accuracies."""
    functions = {
        "names": evaluate_names,
        "descriptions": evaluate_descriptions,
        "image_prompts": evaluate_image_prompts,
        "kway": evaluate_kway,
        "unseen": evaluate_unseen,
        "order": evaluate_order,
        "sampler": evaluate_sampler,
    }
    if experiment not in functions:
        raise ValueError(f"unknown experiment {experiment!r}; known: {list(functions)}")
    start = time.perf_counter()
    records = functions[experiment](ctx, **inputs)
    log.info(
        "%s: %d records in %.1f s: %s",
        experiment,
        len(records),
        time.perf_counter() - start,
        summarise_records(records),
    )
    return records


# --------------------------------------------------------------------------- reporting
def write_experiment_report(
    experiment: str, record_paths: Sequence, table_dir, figure_stem
) -> None:
    """Table (``<table_dir>/<experiment>.csv`` and ``.md``) and figure of one experiment."""
    from pathlib import Path

    from tina.io import write_csv, write_text
    from tina.novelty import novelty_markdown, novelty_table
    from tina.report import check_novelty, make_figure, make_tables, read_records, write_tables

    if experiment == "novelty":
        records = check_novelty(pd.concat([pd.read_csv(p) for p in record_paths]))
        table = novelty_table(records)
        write_csv(Path(table_dir) / "novelty.csv", table)
        write_text(Path(table_dir) / "novelty.md", novelty_markdown(table))
    else:
        records = read_records(record_paths)
        tables = make_tables(records[records["experiment"] == experiment])
        if experiment not in tables:
            raise ValueError(f"the records of {list(record_paths)} hold no {experiment!r} rows")
        write_tables({experiment: tables[experiment]}, table_dir)
    make_figure(experiment, records, figure_stem)


def _cell(row: pd.Series | None) -> str:
    if row is None or pd.isna(row["mean"]):
        return "n/a"
    std = "n/a" if pd.isna(row["std"]) else f"{100 * row['std']:.1f}"
    return f"{100 * row['mean']:.1f} ± {std} ({int(row['count'])})"


def main_table_markdown(table: pd.DataFrame, setting: str = "names") -> str:
    """Methods by split (test-ID, test-OOD): accuracy % as mean ± std (tasks)."""
    from tina.report import METHOD_ORDER, SPLIT_LABELS, method_label

    part = table[table["setting"] == setting]
    splits = [s for s in ("test_id", "test_ood") if s in set(part["split"])]
    methods = [m for m in METHOD_ORDER if m in set(part["method"])]
    methods += sorted(set(part["method"]) - set(methods))
    cells = {(r["split"], r["method"]): r for _, r in part.iterrows()}
    header = "| method | " + " | ".join(SPLIT_LABELS.get(s, s) for s in splits) + " |"
    lines = [header, "|" + "---|" * (len(splits) + 1)]
    for method in methods:
        values = " | ".join(_cell(cells.get((split, method))) for split in splits)
        lines.append(f"| {method_label(method)} | {values} |")
    return "\n".join(lines) + "\n"


def _demote(markdown: str, levels: int = 2) -> str:
    """Markdown with every heading ``levels`` deeper (so tables nest under a section)."""
    prefix = "#" * levels
    return "\n".join(
        prefix + line if line.startswith("#") else line for line in markdown.split("\n")
    )


def results_markdown(
    run: str, summary: dict, tables: dict[str, pd.DataFrame], novelty: pd.DataFrame | None,
    stages: pd.DataFrame | None = None,
) -> str:  # fmt: skip
    """The Markdown digest of a run: the main table, then every experiment's table."""
    from tina.novelty import novelty_markdown
    from tina.report import EXPERIMENT_TITLES, table_markdown

    def number(value, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    ratios = ", ".join(
        f"{split} {number(summary[split]['ratio_tina_to_pmodel'], '.2f')}"
        for split in ("test_id", "test_ood")
    )
    parts = [
        f"# Results of run `{run}`\n",
        "## Main result: prompts that name the classes\n",
        "Accuracy in percent on test tasks: mean ± std over tasks (number of tasks); each "
        "task's Tina samples are averaged first.\n",
        main_table_markdown(tables["names"]),
        f"Tina's accuracy as a fraction of the fine-tuned p-model's: {ratios}. Seconds per "
        f"generated model: {number(summary['seconds_per_generated_model'], '.3g')}; per "
        f"fine-tuned p-model: {number(summary['seconds_per_pmodel'], '.3g')}.\n",
        "## Experiments\n",
    ]
    order = [name for name in EXPERIMENT_TITLES if name in tables]
    order += sorted(set(tables) - set(order))
    parts += [_demote(table_markdown(tables[name])) for name in order]
    if novelty is not None:
        parts.append(_demote(novelty_markdown(novelty)))
    if stages is not None:
        shown = stages.to_markdown(index=False, floatfmt=".1f")
        parts.append(
            f"### Wall time per stage\n\nSeconds summed over each rule's jobs.\n\n{shown}\n"
        )
    return "\n".join(parts)


def write_run_summary(
    record_paths: Sequence, novelty_path, benchmark_dir, tables_dir, summary_path, results_path,
    run: str,
) -> dict:  # fmt: skip
    """``summary.json``, the performance tables and ``results.md`` of a finished run."""
    from tina.io import write_text
    from tina.novelty import novelty_table
    from tina.report import (
        make_summary,
        make_tables,
        performance_table,
        read_records,
        stage_summary,
        write_performance,
        write_summary,
    )

    records = read_records(record_paths)
    perf = performance_table(benchmark_dir)
    write_performance(perf, tables_dir)
    novelty = novelty_table(pd.read_csv(novelty_path)) if novelty_path else None
    extra = {"run": run}
    if novelty is not None:
        extra["novelty"] = {
            row["source"]: {c: row[c] for c in novelty.columns if c != "source"}
            for _, row in novelty.iterrows()
        }
    summary = make_summary(records, perf, extra=extra, experiment="names", setting="names")
    write_summary(summary_path, summary)
    tables = make_tables(records)
    write_text(results_path, results_markdown(run, summary, tables, novelty, stage_summary(perf)))
    return summary
