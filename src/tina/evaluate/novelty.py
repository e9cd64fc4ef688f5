"""Novelty of generated models: does Tina write new nets, or copy training p-models?

Two kinds of models, each scored on the test images of its task:

- ``generated``: Tina's nets for the test-ID tasks (``evaluate.samples`` per task), prompted
  with class names;
- ``noise_sigma=<s>``: training p-models plus Gaussian noise of ``s`` times each parameter's
  standard deviation across the training p-models, on their own training tasks (the control of
  the p-diff protocol: what a model that merely copies and perturbs its training set looks like).

For every model: the nearest training p-model in flat parameter space, as an L2 distance
(``nearest_distance``) and as a cosine similarity (``nearest_cosine``, to the most similar
training p-model: 1 minus the cosine distance of :func:`tina.metrics.nearest_neighbour`); and
``wrong_iou``, the intersection over union of the test images that the model and a counterpart
misclassify. The counterpart of a generated net is the retrieved training p-model (its rows
matched to the task's classes, so both predict in the same label space); that of a noisy copy
is its source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tina.baselines import retrieve
from tina.data import to_float
from tina.evaluate.context import EvalContext, generate, task_slots
from tina.evaluate.records import NOVELTY_COLUMNS
from tina.metrics import accuracy, nearest_neighbour, wrong_iou
from tina.nets import NetSpec, forward
from tina.sampling import name_slots
from tina.seeding import derive_seed
from tina.tasks import class_ids

log = logging.getLogger("tina.evaluate.novelty")

GENERATED = "generated"


def noise_source(sigma: float) -> str:
    """The ``source`` label of p-models perturbed with noise ``sigma``."""
    return f"noise_sigma={sigma:g}"


@torch.no_grad()
def predictions(
    nets: Tensor,
    class_ids: Sequence[int],
    images: Tensor,
    labels: Tensor,
    spec: NetSpec,
    body: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Predicted slots ``[m, n]`` of nets ``[m, P]`` of one task, and the true slots ``[n]``.

    The nets run on their device; the predictions come back on the CPU. The task's test items
    are the images whose label is one of ``class_ids`` (prompt order); padding slots of nets
    with more slots than classes are never predicted.
    """
    index, truth = task_slots(labels, class_ids)
    if len(index) == 0:
        raise ValueError(f"no test images of the task's classes {list(class_ids)}")
    task_images = to_float(images[index]).to(nets.device)
    batch = task_images.unsqueeze(0).expand(len(nets), *task_images.shape)
    body = None if body is None else body.to(nets.device)
    logits = forward(nets.float(), batch, spec, body=body)
    logits[..., len(class_ids) :] = float("-inf")
    return logits.argmax(-1).cpu(), truth


def nearest(queries: Tensor, bank: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """L2 distance to the nearest row of ``bank`` and cosine similarity to the most similar."""
    _, distance = nearest_neighbour(queries, bank, "l2")
    _, cosine_distance = nearest_neighbour(queries, bank, "cosine")
    return distance, 1.0 - cosine_distance


def perturb(params: Tensor, std: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``params + sigma * std * noise``: Gaussian noise scaled per parameter by ``std``."""
    noise = torch.randn(params.shape, generator=generator)
    return params + sigma * std * noise


def novelty_rows(
    source: str,
    task_ids: Sequence[int],
    class_ids: Sequence[Sequence[int]],
    nets: Tensor,
    partners: Tensor,
    bank: Tensor,
    images: Tensor,
    labels: Tensor,
    spec: NetSpec,
    body: Tensor | None = None,
    sample: int = 0,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Novelty records of ``nets [T, P]`` (one per task), each compared with its partner; the
    nets' predictions run on ``device``."""
    distance, cosine = nearest(nets, bank)
    rows = []
    for t, ids in enumerate(class_ids):
        pred, truth = predictions(
            torch.stack([nets[t], partners[t]]).to(device), ids, images, labels, spec, body
        )
        rows.append(
            {
                "task_id": int(task_ids[t]),
                "source": source,
                "accuracy": accuracy(pred[0], truth),
                "nearest_distance": float(distance[t]),
                "nearest_cosine": float(cosine[t]),
                "wrong_iou": wrong_iou(pred[0], pred[1], truth),
                "sample": sample,
            }
        )
    return pd.DataFrame(rows, columns=[*NOVELTY_COLUMNS, "sample"])


def evaluate_novelty(ctx: EvalContext) -> pd.DataFrame:
    """Novelty records of Tina's nets on test-ID tasks and of noisy training p-models.

    The noise levels and the number of perturbed p-models come from ``ctx.config``
    (``noise_sigmas``, ``noise_pmodels``).
    """
    spec, body = ctx.tina.spec, ctx.body()
    data, cfg = ctx.dataset, ctx.config
    bank, bank_classes = ctx.training_pmodels()
    test_args = (data.test_images, data.test_labels, spec, body)

    tasks = ctx.split("test_id")
    classes = ctx.classes(tasks)
    names = ctx.embeddings["names"]
    retrieved = retrieve(classes, bank, bank_classes, names, spec)
    frames = []
    for sample, (nets, _) in enumerate(generate(ctx, "novelty", name_slots(classes, names))):
        frames.append(
            novelty_rows(
                GENERATED,
                tasks["task_id"].tolist(),
                class_ids(tasks),
                nets,
                retrieved,
                bank,
                *test_args,
                sample=sample,
                device=ctx.device,
            )
        )

    train_meta = ctx.zoo.meta[ctx.zoo.train_mask().numpy()].reset_index(drop=True)
    order = torch.Generator().manual_seed(derive_seed(ctx.seed, "novelty", "sources"))
    chosen = torch.randperm(len(bank), generator=order)[: cfg.noise_pmodels]
    sources, source_meta = bank[chosen], train_meta.iloc[chosen.numpy()]
    std = bank.std(0) if len(bank) > 1 else torch.ones(bank.shape[1])
    for sigma in cfg.noise_sigmas:
        g = torch.Generator().manual_seed(derive_seed(ctx.seed, "novelty", "noise", sigma))
        frames.append(
            novelty_rows(
                noise_source(sigma),
                source_meta["task_id"].tolist(),
                class_ids(source_meta),
                perturb(sources, std, sigma, g),
                sources,
                bank,
                *test_args,
                device=ctx.device,
            )
        )
    records = pd.concat(frames, ignore_index=True)
    log.info("novelty:\n%s", novelty_table(records).to_string(index=False))
    return records


def novelty_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per source: model count and the mean of accuracy, distance, similarity and wrong IoU."""
    columns = ["accuracy", "nearest_distance", "nearest_cosine", "wrong_iou"]
    table = records.groupby("source", sort=False)[columns].mean()
    table.insert(0, "models", records.groupby("source", sort=False).size())
    order = sorted(table.index, key=lambda s: (s != GENERATED, s))
    return table.loc[order].reset_index()
