"""Scaling experiments: Tina retrained as one size grows while the rest stays fixed.

- ``tasks``: Tina trained on the first ``n`` of a seeded permutation of the training p-models,
  so the subsets are nested (every point's zoo contains the smaller points' zoos);
- ``width``: Tina of width ``w`` trained on every training p-model;
- ``net``: the generated net's architecture. A self-contained job trains a generic model of that
  architecture (``net_generic_steps``), fine-tunes the p-models (``net_zoo_steps``) of the
  first ``net_tasks`` training tasks and of the test-ID tasks, and trains Tina on them.

Every point trains Tina for ``scaling.steps`` steps, the point that matches the main run's
configuration too, so the points of a curve are comparable with each other (the main run trains
longer). Each point is evaluated on the test-ID tasks prompted with class names: Tina's samples
(as :mod:`tina.evaluate` draws them), the fine-tuned p-models and the generic model with
classifier selection. Records have experiment ``scaling_<kind>`` and setting ``<kind>=<value>``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from tina.config import from_section
from tina.data import Dataset, load_dataset
from tina.device import pick_device
from tina.evaluate.context import EvalConfig, EvalContext
from tina.evaluate.records import name_records, reference_records
from tina.grounding import GroundingSettings, load_settings
from tina.prompts import load_embeddings
from tina.sampling import Tina, TinaConfig
from tina.seeding import derive_seed
from tina.tasks import read_tasks
from tina.train import train_tina
from tina.train_data import TrainData, image_prompt_bank, load_train_data
from tina.zoo.store import Generic, Zoo, finetune_shard, load_generic, load_zoo, train_generic_model

log = logging.getLogger("tina.scaling")

KINDS = ("tasks", "width", "net")


@dataclass(frozen=True)
class ScalingConfig:
    """The ``scaling`` config section (defaults are the schema's)."""

    steps: int = 300
    tasks: tuple[int, ...] = (100, 200, 400)
    widths: tuple[int, ...] = (32, 64)
    nets: tuple[str, ...] = ("cnn5k", "cnn10k")
    net_tasks: int = 100
    net_generic_steps: int = 300
    net_zoo_steps: int = 100

    @classmethod
    def from_config(cls, section: dict) -> ScalingConfig:
        return from_section(cls, section)


@dataclass
class RunData:
    """What the scaling jobs read: data, tasks, class split, prompts and the main run's
    generic model and zoo (None for the net curve, which trains its own)."""

    dataset: Dataset
    tasks: pd.DataFrame
    class_split: pd.DataFrame
    embeddings: dict[str, Tensor]
    grounding: GroundingSettings  # the main run's choice, for every point's own grounding
    image_prompts: Tensor  # [N, D] the training images' prompts, through the main run's route
    shots: tuple[int, ...]
    generic: Generic | None = None
    zoo: Zoo | None = None


def load_run_data(
    inputs, *, encoder: dict, shots: Sequence[int], with_zoo: bool = True, device: str = "cpu"
) -> RunData:
    """Read the files named by a scaling rule's ``inputs`` (``zoo`` too when ``with_zoo``):
    the training images' prompts come from the main run's image route (``encoder``,
    ``inputs.projection`` over ``inputs.generic``, run on ``device``: the config's ``auto``,
    ``cpu`` or ``cuda``), whatever net a point trains."""
    dataset = load_dataset(inputs.dataset, inputs.classes)
    embeddings = load_embeddings(inputs.embeddings)
    generic = load_generic(inputs.generic)
    run = RunData(
        dataset=dataset,
        tasks=read_tasks(inputs.tasks),
        class_split=pd.read_csv(inputs.class_split, keep_default_na=False),
        embeddings=embeddings,
        grounding=load_settings(inputs.grounding),
        image_prompts=image_prompt_bank(
            encoder,
            inputs.projection,
            generic,
            embeddings["names"].shape[1],
            dataset.train_images,
            pick_device(device),
        ),  # fmt: skip
        shots=tuple(shots),
    )
    if with_zoo:
        run.generic = generic
        run.zoo = load_zoo(list(inputs.zoo))
    return run


def nested_subset(n_total: int, n: int, seed: int) -> Tensor:
    """Indices of the first ``n`` of a seeded permutation of ``n_total`` items (nested in n)."""
    if not 1 <= n <= n_total:
        raise ValueError(
            f"scaling.tasks asks for {n} training tasks but the zoo has {n_total}: "
            f"use values between 1 and tasks.n_train"
        )
    g = torch.Generator().manual_seed(derive_seed(seed, "scaling", "tasks"))
    return torch.randperm(n_total, generator=g)[:n]


def train_data(run: RunData, generic: Generic, zoo: Zoo) -> TrainData:
    """What Tina trains on at a point: the training p-models of ``zoo`` (from ``generic``), and
    fresh tasks drawn from the run's class split."""
    return load_train_data(
        run.dataset, run.tasks, run.embeddings, generic, zoo, run.grounding, run.image_prompts,
        shots=run.shots, class_split=run.class_split,
    )  # fmt: skip


def train_point(
    data: TrainData, cfg: TinaConfig, seed: int, device: str = "cpu", precision: str = "fp32"
) -> Tina:
    """Train Tina on ``data`` (:func:`train_data`, or a subset of its p-models).

    ``device`` is the config's choice (``auto``, ``cpu``, ``cuda``); the model comes back on the
    CPU, where the evaluation samples from it.
    """
    tina, _ = train_tina(data, cfg, seed=seed, device=pick_device(device), precision=precision)
    log.info(
        "trained Tina (width %d) on %d p-models for %d steps in %.1f s, validation %.4f",
        cfg.width,
        len(data.params),
        cfg.steps,
        tina.meta["train_seconds"],
        tina.meta["val_accuracy"],
    )
    return tina


def evaluate_point(
    run: RunData, zoo: Zoo, tina: Tina, evaluate: dict, seed: int, experiment: str, setting: str
) -> pd.DataFrame:
    """Records of Tina, the p-models and generic selection on the test-ID tasks."""
    ctx = EvalContext(
        tina, run.dataset, run.tasks, zoo, run.embeddings, seed, EvalConfig.from_config(evaluate),
        next(tina.model.parameters()).device,
    )  # fmt: skip
    tasks = ctx.split("test_id").assign(setting=setting)
    records = pd.concat(
        [name_records(ctx, experiment, tasks), reference_records(ctx, experiment, tasks)],
        ignore_index=True,
    )
    tina_mean = records.loc[records["method"] == "tina", "accuracy"].mean()
    log.info(
        "%s %s: Tina mean accuracy %.4f on %d tasks", experiment, setting, tina_mean, len(tasks)
    )
    return records


def _tina_config(tina: dict, scaling: ScalingConfig, **changes) -> TinaConfig:
    return dataclasses.replace(TinaConfig.from_config(tina), steps=scaling.steps, **changes)


def scale_tasks(
    run: RunData, n: int, *, tina: dict, scaling: dict, evaluate: dict, seed: int,
    device: str = "cpu",
) -> pd.DataFrame:  # fmt: skip
    """Scaling point: Tina trained on ``n`` training p-models (a nested seeded subset)."""
    cfg = ScalingConfig.from_config(scaling)
    data = train_data(run, run.generic, run.zoo)
    data = data.subset(nested_subset(len(data.params), n, seed))
    model = train_point(data, _tina_config(tina, cfg), seed, device, tina.get("precision", "fp32"))
    return evaluate_point(run, run.zoo, model, evaluate, seed, "scaling_tasks", f"tasks={n}")


def scale_width(
    run: RunData, width: int, *, tina: dict, scaling: dict, evaluate: dict, seed: int,
    device: str = "cpu",
) -> pd.DataFrame:  # fmt: skip
    """Scaling point: Tina of transformer width ``width`` on every training p-model."""
    cfg = ScalingConfig.from_config(scaling)
    heads = TinaConfig.from_config(tina).heads
    if width % heads:
        raise ValueError(
            f"scaling.widths: {width} is not divisible by tina.heads = {heads}; use multiples "
            f"of {heads}"
        )
    model = train_point(
        train_data(run, run.generic, run.zoo), _tina_config(tina, cfg, width=width), seed,
        device, tina.get("precision", "fp32"),
    )  # fmt: skip
    return evaluate_point(run, run.zoo, model, evaluate, seed, "scaling_width", f"width={width}")


def net_zoo(
    run: RunData, arch: str, *, net: dict, generic: dict, zoo: dict, cfg: ScalingConfig,
    seed: int, threads: int = 1, device: str = "cpu",
) -> tuple[Generic, Zoo]:  # fmt: skip
    """A generic model of ``arch`` and p-models of the first ``net_tasks`` training tasks and
    of every test-ID task, trained like the main zoo but for the scaling step counts, on
    ``device`` (the config's ``auto``, ``cpu`` or ``cuda``)."""
    tasks = run.tasks
    train = tasks[tasks["split"] == "train"].head(cfg.net_tasks)
    chosen = pd.concat([train, tasks[tasks["split"] == "test_id"]], ignore_index=True)
    net_cfg = {**net, "arch": arch}
    chosen_device = pick_device(device)
    model, report = train_generic_model(
        run.dataset, run.class_split, net_cfg, {**generic, "steps": cfg.net_generic_steps}, seed,
        chosen_device,
    )  # fmt: skip
    point_zoo = finetune_shard(
        run.dataset, chosen, model,
        zoo={**zoo, "steps": cfg.net_zoo_steps}, net=net_cfg,
        k=int(tasks["k"].max()), seed=seed, threads=threads, device=chosen_device,
    )  # fmt: skip
    log.info(
        "%s: %d parameters, generic test accuracy %s, %d p-models",
        arch,
        point_zoo.spec.num_params,
        report.get("test_acc"),
        len(point_zoo.params),
    )
    return model, point_zoo


def scale_net(
    run: RunData, arch: str, *, tina: dict, scaling: dict, evaluate: dict, net: dict,
    generic: dict, zoo: dict, seed: int, threads: int = 1, device: str = "cpu",
) -> pd.DataFrame:  # fmt: skip
    """Scaling point: generated nets of architecture ``arch``, from their own generic and zoo."""
    cfg = ScalingConfig.from_config(scaling)
    model, point_zoo = net_zoo(
        run, arch, net=net, generic=generic, zoo=zoo, cfg=cfg, seed=seed, threads=threads,
        device=device,
    )  # fmt: skip
    trained = train_point(
        train_data(run, model, point_zoo), _tina_config(tina, cfg), seed, device,
        tina.get("precision", "fp32"),
    )  # fmt: skip
    return evaluate_point(run, point_zoo, trained, evaluate, seed, "scaling_net", f"net={arch}")
