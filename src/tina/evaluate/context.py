"""What every experiment reads (:class:`EvalContext`), how a workflow rule loads it, and
Tina's nets for a batch of prompts (:func:`generate`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from tina.config import from_section
from tina.data import Dataset, load_dataset
from tina.device import pick_device
from tina.grounding import Slots
from tina.nets import score, split_body
from tina.prompts import ImageEmbedder, load_embeddings
from tina.prompts import load_image_embedder as image_route
from tina.sampling import Tina, load_tina
from tina.seeding import derive_seed
from tina.tasks import read_tasks, task_classes
from tina.zoo.store import Zoo, load_zoo


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
    dataset: Dataset  # train/test images and labels
    tasks: pd.DataFrame
    zoo: Zoo
    embeddings: dict[str, Tensor]
    seed: int
    config: EvalConfig
    device: torch.device = torch.device("cpu")  # where Tina samples and nets are scored

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
        train = self.zoo.train_mask()
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
        return score(
            params.to(self.device), tasks, data.test_images, data.test_labels, self.tina.spec,
            self.body(),
        )  # fmt: skip

    def score_val(self, params: Tensor, tasks: pd.DataFrame) -> Tensor:
        """Accuracy ``[T]`` on the validation images (what every choice is made on)."""
        data = self.dataset
        return score(
            params.to(self.device), tasks, data.val_images, data.val_labels, self.tina.spec,
            self.body(),
        )  # fmt: skip


def generate(
    ctx: EvalContext,
    experiment: str,
    slots: Slots,
    *,
    samples: int | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
) -> list[tuple[Tensor, float]]:
    """Tina's nets for a batch of prompts ``slots``: one ``(params [T, P], seconds per net)``
    per sample.

    Sample ``s`` is seeded ``derive_seed(seed, "eval", experiment, s)`` whatever the batch.
    """
    out = []
    for sample in range(ctx.config.samples if samples is None else samples):
        start = time.perf_counter()
        params = ctx.tina.generate(
            slots,
            sampler=sampler,
            steps=steps or ctx.config.ddim_steps,
            seed=derive_seed(ctx.seed, "eval", experiment, sample),
        )
        out.append((params, (time.perf_counter() - start) / len(slots.mask)))
    return out


def task_slots(labels: Tensor, class_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Indices of the items whose label is one of ``class_ids`` and their slot (prompt position)."""
    ids = torch.as_tensor(list(class_ids), dtype=torch.long)
    match = labels.reshape(-1, 1) == ids.reshape(1, -1)
    index = torch.nonzero(match.any(dim=1)).squeeze(1)
    return index, match[index].int().argmax(dim=1)


def load_image_embedder(tina: Tina, encoder: dict, projection_path: str | Path) -> ImageEmbedder:
    """Image prompts in Tina's prompt space (:func:`tina.prompts.load_image_embedder`), run
    on the device Tina samples on."""
    codec, device = tina.codec, next(tina.model.parameters()).device
    return image_route(
        encoder, projection_path, codec.generic, codec.spec_all, tina.model.prompt_dim, device
    )


def load_context(
    inputs, section: dict, seed: int, tina: Tina | None = None, device: str = "cpu"
) -> EvalContext:
    """The context of a workflow rule: ``inputs`` names dataset, classes, tasks, zoo shards,
    embeddings and (unless ``tina`` is given) the Tina checkpoint, whose transformer samples on
    ``device`` (the config's ``auto``, ``cpu`` or ``cuda``)."""
    tina = tina if tina is not None else load_tina(inputs.tina)
    chosen = pick_device(device)
    tina.model.to(chosen)
    return EvalContext(
        tina=tina,
        dataset=load_dataset(inputs.dataset, inputs.classes),
        tasks=read_tasks(inputs.tasks),
        zoo=load_zoo(list(inputs.zoo)),
        embeddings=load_embeddings(inputs.embeddings),
        seed=seed,
        config=EvalConfig.from_config(section),
        device=chosen,
    )
