"""The zoo's files: the generic model and the p-model shards, as the workflow stores them.

- ``generic/model.safetensors``: ``params`` (flat, head over all classes) and ``trained``
  ([C] bool: the classes it was trained on), the net spec in the metadata;
- ``zoo/<part>-<i>.safetensors``: ``params`` [T, P] (float32) and ``classes`` [T, k] (-1 pads),
  with the spec in the metadata; ``zoo/<part>-<i>.csv``: task id, split, classes and the
  accuracies of the p-model and of the generic model with classifier selection.

The zoo has two parts: ``train`` (the training tasks' p-models, all that Tina learns from) and
``eval`` (the validation and test tasks', which only the evaluation and the diagnostics read),
so that Tina trains while the second part fine-tunes. Shard ``i`` of ``n`` of a part holds
every task of that part whose position in its rows is ``i`` modulo ``n``; the sharding never
changes a p-model (see :mod:`tina.zoo.finetune`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from safetensors import safe_open
from torch import Tensor

from tina.data import Dataset
from tina.io import load_tensors, save_tensors, write_csv, write_json
from tina.nets import NetSpec
from tina.tasks import task_classes
from tina.zoo.finetune import finetune_pmodels, train_generic


@dataclass
class Generic:
    flat: Tensor
    spec: NetSpec  # head over all classes
    trained: Tensor  # [C] bool


@dataclass
class Zoo:
    params: Tensor  # [T, P]
    classes: Tensor  # [T, k]
    meta: pd.DataFrame  # one row per p-model, in the order of params
    spec: NetSpec

    def train_mask(self) -> Tensor:
        """``[T]`` bool: the rows that are training p-models (split ``train``)."""
        return torch.as_tensor((self.meta["split"] == "train").to_numpy(copy=True))


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


# --------------------------------------------------------------------------- generic
def train_generic_model(
    dataset: Dataset,
    split: pd.DataFrame,
    net: dict,
    section: dict,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[Generic, dict]:
    """Train the generic net on the seen classes (or all, by config) on ``device``."""
    classes = split["class_id"].astype(int)
    if section["classes"] == "seen":
        classes = classes[split["seen"].to_numpy(dtype=bool)]
    n = dataset.n_classes
    spec = NetSpec(net["arch"], n, head_only=False)
    flat, report = train_generic(
        dataset.train_images,
        dataset.train_labels,
        classes.tolist(),
        spec,
        steps=section["steps"],
        lr=section["lr"],
        batch_size=section["batch_size"],
        seed=seed,
        num_classes_total=n,
        test_images=dataset.test_images,
        test_labels=dataset.test_labels,
        augment_mode=section["augment"],
        device=device,
    )
    trained = torch.zeros(n, dtype=torch.bool)
    trained[torch.as_tensor(classes.to_numpy().copy())] = True
    return Generic(flat, spec, trained), report


def save_generic(generic: Generic, report: dict, model_path, report_path) -> None:
    save_tensors(
        model_path,
        {"params": generic.flat, "trained": generic.trained.to(torch.uint8)},
        metadata={"spec": generic.spec.to_json()},
    )
    write_json(report_path, report)


def load_generic(path) -> Generic:
    tensors = load_tensors(path)
    spec = NetSpec.from_json(_metadata(path)["spec"])
    return Generic(tensors["params"], spec, tensors["trained"].bool())


# --------------------------------------------------------------------------- shards
ZOO_PARTS = ("train", "eval")
"""The zoo's parts: the training tasks' p-models, then every other task's."""


def shard_tasks(tasks: pd.DataFrame, part: str, shard: int, shards: int) -> pd.DataFrame:
    """The tasks of one shard of one part: every ``shards``-th row of that part's tasks."""
    if part not in ZOO_PARTS:
        raise ValueError(f"zoo part {part!r} is none of {ZOO_PARTS}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    training = tasks["split"] == "train"
    return tasks[training if part == "train" else ~training].iloc[shard::shards]


def finetune_shard(
    dataset: Dataset,
    mine: pd.DataFrame,
    generic: Generic,
    *,
    zoo: dict,
    net: dict,
    k: int,
    seed: int,
    threads: int,
    device: torch.device | str = "cpu",
) -> Zoo:
    """Fine-tune the p-models of the tasks ``mine`` (a shard) from the generic model on
    ``device``."""
    spec = NetSpec(net["arch"], k, head_only=net["head_only"])
    params, meta = finetune_pmodels(
        dataset,
        mine,
        generic.flat,
        spec,
        steps=zoo["steps"],
        lr=zoo["lr"],
        batch_size=zoo["batch_size"],
        seed=seed,
        chunk=zoo["chunk"],
        threads=threads,
        augment_mode=zoo["augment"],
        device=device,
    )
    info = mine[["task_id", "split", "k", "n_unseen", "group", "class_ids"]].reset_index(drop=True)
    meta = info.merge(meta, on="task_id", how="left", validate="one_to_one")
    return Zoo(params, task_classes(mine, k), meta, spec)


def save_shard(zoo: Zoo, params_path, meta_path) -> None:
    save_tensors(
        params_path,
        {"params": zoo.params, "classes": zoo.classes},
        metadata={"spec": zoo.spec.to_json()},
    )
    write_csv(meta_path, zoo.meta)


def load_zoo(param_paths: list) -> Zoo:
    """All shards, concatenated in task-id order."""
    params, classes, metas, spec = [], [], [], None
    for path in param_paths:
        tensors = load_tensors(path)
        spec = NetSpec.from_json(_metadata(path)["spec"])
        meta = pd.read_csv(str(path).replace(".safetensors", ".csv"), keep_default_na=False)
        if len(meta) != len(tensors["params"]):
            raise ValueError(f"{path}: {len(tensors['params'])} p-models but {len(meta)} rows")
        params.append(tensors["params"])
        classes.append(tensors["classes"])
        metas.append(meta)
    meta = pd.concat(metas, ignore_index=True)
    order = torch.as_tensor(meta["task_id"].argsort().to_numpy().copy())
    meta = meta.iloc[order.numpy()].reset_index(drop=True)
    return Zoo(torch.cat(params)[order], torch.cat(classes)[order], meta, spec)
