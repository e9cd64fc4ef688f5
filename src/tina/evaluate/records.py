"""The record format of every evaluation, and the records of each method on a set of tasks.

Records have one row per (method, setting, task, sample) and the columns :data:`RECORD_COLUMNS`;
novelty records have :data:`NOVELTY_COLUMNS` (see :mod:`tina.evaluate.novelty`). Reporting
(:mod:`tina.report`) reads both.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from tina.baselines import Ridge, hypernetwork_predict, retrieve, train_hypernetwork
from tina.evaluate.context import EvalContext, generate, task_slots
from tina.grounding import Slots
from tina.metrics import majority_accuracy
from tina.sampling import name_slots
from tina.tasks import class_ids

log = logging.getLogger("tina.evaluate")

RECORD_COLUMNS = (
    "experiment",
    "setting",
    "method",
    "split",
    "task_id",
    "k",
    "sample",
    "accuracy",
    "seconds",
)
NOVELTY_COLUMNS = (
    "task_id",
    "source",
    "accuracy",
    "nearest_distance",
    "nearest_cosine",
    "wrong_iou",
)
TEST_SPLITS = ("test_id", "test_ood", "test_kway")
REFERENCES = ("pmodel", "generic_selection")
BASELINES = ("retrieval", "ridge", "hypernetwork")


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


def tina_records(
    ctx: EvalContext, experiment: str, tasks: pd.DataFrame, slots: Slots, **sampling
) -> pd.DataFrame:
    """Records of Tina's samples for ``tasks`` prompted with ``slots``
    (:class:`tina.grounding.Slots`, one task per row of ``tasks``)."""
    frames = [
        records_frame(
            experiment, "tina", tasks, ctx.score(params, tasks), sample=sample, seconds=seconds
        )
        for sample, (params, seconds) in enumerate(generate(ctx, experiment, slots, **sampling))
    ]
    return pd.concat(frames, ignore_index=True)


def base_records(
    ctx: EvalContext, experiment: str, tasks: pd.DataFrame, slots: Slots, method: str = "base"
) -> pd.DataFrame:
    """Records of the grounded base of ``slots`` alone (Tina's starting point, no Tina):
    ``method`` ``base`` is Tina's own base; other names record other groundings."""
    start = time.perf_counter()
    params = ctx.tina.base(slots)
    seconds = (time.perf_counter() - start) / len(tasks)
    return records_frame(experiment, method, tasks, ctx.score(params, tasks), seconds=seconds)


def prompt_records(
    ctx: EvalContext, experiment: str, tasks: pd.DataFrame, slots: Slots, **sampling
) -> pd.DataFrame:
    """Tina's records for ``slots`` and those of its own base, for pairing."""
    return pd.concat(
        [
            tina_records(ctx, experiment, tasks, slots, **sampling),
            base_records(ctx, experiment, tasks, slots),
        ],
        ignore_index=True,
    )


def name_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame, **sampling):
    """Tina's records for ``tasks`` prompted with their class names (class ids included:
    known classes start from their generic rows, unseen ones from the name mixture)."""
    slots = name_slots(ctx.classes(tasks), ctx.embeddings["names"])
    return tina_records(ctx, experiment, tasks, slots, **sampling)


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


def majority_records(ctx: EvalContext, experiment: str, tasks: pd.DataFrame) -> pd.DataFrame:
    """Always the class most frequent among the task's training images, on its test images."""
    data = ctx.dataset
    accuracy = []
    for ids in class_ids(tasks):
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
        ctx.tina, params, classes, names, steps=ctx.config.hypernetwork_steps, seed=ctx.seed,
        device=ctx.device,
    )  # fmt: skip
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
