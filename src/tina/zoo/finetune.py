"""Training the generic model and the zoo of personalised models (p-models) Tina learns from.

The *generic* model is one net with a head over all classes, trained on the seen classes only.
*Classifier selection* turns it into a task's net: its body plus the head rows of the task's
classes in prompt order. A *p-model* is that net fine-tuned on the task's training images.

Many p-models train at once as one batched computation: their flat parameters are stacked into
``[T, P]`` and run as grouped convolutions (:func:`tina.nets.forward`), less CPU time per model
than training them one by one (chunks of 4 to 16 are fastest). Each task's
mini-batches and augmentations come from a generator seeded by ``(seed, task_id)``, the loss is
a sum of per-task losses and Adam works elementwise, so on one thread a task's p-model is
bit-identical whichever tasks share its chunk or shard (a chunk of one runs as two copies, to
take the grouped code path). On several threads the result is reproducible for the same chunk
composition only.

Both stages run on a ``device`` (a GPU, or the CPU by default). Every random draw (initial
parameters, mini-batches, augmentations) is made on the CPU and the draws are moved, so a seed
draws the same numbers on any device; the trained parameters come back on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from tina import seeding
from tina.data import Dataset, to_float
from tina.io import progress as progress_bar
from tina.io import set_threads
from tina.nets import (
    NetSpec,
    features,
    forward,
    init_head_rows,
    init_params,
    mask_padding,
    slot_index,
    spec_of_generic,
    split_body,
    task_accuracy,
    unflatten,
)
from tina.tasks import PAD, task_classes

log = logging.getLogger("tina.zoo")

AUGMENTS = ("none", "geometric", "color")
"""On-the-fly augmentation of training batches: ``geometric`` shifts images by up to
``MAX_SHIFT`` pixels (edges replicated) and mirrors half of them; ``color`` also puts the RGB
channels in a random order (the data set's glyphs already come in many hues)."""
MAX_SHIFT = 2
_CHANNEL_ORDERS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


# --------------------------------------------------------------------------- sampling
def _epoch_batches(n: int, steps: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """Indices ``[steps, batch_size]`` into ``n`` items, one fresh permutation per epoch."""
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def draw_augment(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Random draws ``[*shape, 4]`` for :func:`augment`: row and column shift, mirror flag and
    channel order of each image (all drawn whatever the mode, so modes share one stream)."""
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (*shape, 2), generator=generator)
    flips = torch.randint(0, 2, (*shape, 1), generator=generator)
    orders = torch.randint(0, len(_CHANNEL_ORDERS), (*shape, 1), generator=generator)
    return torch.cat([shifts, flips, orders], dim=-1)


def augment(images: Tensor, draws: Tensor, mode: str) -> Tensor:
    """Augment ``images [N, 3, H, W]`` with ``draws [N, 4]`` (:func:`draw_augment`) in ``mode``.

    The result is channels-last in memory, the layout the nets' convolutions use.
    """
    if mode not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, not {mode!r}")
    if mode == "none":
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (MAX_SHIFT,) * 4, mode="replicate")
    rows = (MAX_SHIFT + draws[:, :1]) + torch.arange(height, device=draws.device)
    cols = (MAX_SHIFT + draws[:, 1:2]) + torch.arange(width, device=draws.device)
    cols = torch.where(draws[:, 2:3].bool(), cols.flip(1), cols)
    picked = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    if mode == "color":
        order = _CHANNEL_ORDERS.to(draws.device)[draws[:, 3]][:, None, None, :].expand_as(picked)
        picked = torch.gather(picked, -1, order)
    return picked.permute(0, 3, 1, 2)


def _cosine_lr(optimizer: torch.optim.Optimizer, lr: float, step: int, steps: int, warmup: int):
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``steps``."""
    if step < warmup:
        value = lr * (step + 1) / warmup
    else:
        value = 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    for group in optimizer.param_groups:
        group["lr"] = value


# --------------------------------------------------------------------------- generic model
def train_generic(
    images: Tensor,
    labels: Tensor,
    class_ids: Sequence[int],
    spec_all: NetSpec,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    num_classes_total: int,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    progress: bool = True,
    augment_mode: str = "none",
    device: torch.device | str = "cpu",
) -> tuple[Tensor, dict]:
    """Train the generic net on the images of ``class_ids`` on ``device``; return
    ``(flat [P_all], log)``, the parameters on the CPU.

    The head has a row for each of ``num_classes_total`` classes; the softmax runs over
    ``class_ids`` only, so the rows of the other classes keep their seeded initial values.
    Adam with a short warm-up and cosine decay for a fixed number of steps (no early stop). The
    log has the steps, seconds, the loss curve, the relative loss change over the last tenth
    (``plateau``) and the accuracy among ``class_ids`` on the training (and test) images.
    """
    if spec_all.num_classes != num_classes_total or spec_all.head_only:
        raise ValueError(
            f"spec_all must be a full net with {num_classes_total} classes, got {spec_all}"
        )
    classes = torch.as_tensor(list(class_ids), dtype=torch.long)
    index, slots = slot_index(labels, classes)
    if len(index) == 0:
        raise ValueError("no training images belong to class_ids")
    x_train = to_float(images[index]).to(device)
    flat = init_params(spec_all, seeding.generator(seed, "generic-init")).to(device)
    flat.requires_grad_()
    optimizer = torch.optim.Adam([flat], lr=lr)
    generator = seeding.generator(seed, "generic-batches")
    batches = _epoch_batches(len(index), steps, batch_size, generator)
    draws = draw_augment(batches.shape, generator)
    batches, draws, classes, slots = (t.to(device) for t in (batches, draws, classes, slots))
    losses, start = [], time.perf_counter()
    for step in progress_bar(range(steps), desc="generic", disable=not progress):
        _cosine_lr(optimizer, lr, step, steps, warmup=max(1, steps // 50))
        batch = batches[step]
        x = augment(x_train[batch], draws[step], augment_mode)
        logits = forward(flat.unsqueeze(0), x.unsqueeze(0), spec_all)[0]
        loss = F.cross_entropy(logits[:, classes], slots[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    flat = flat.detach().cpu()
    curve = torch.tensor(losses)
    tenth = max(1, steps // 10)
    last, before = curve[-tenth:].mean(), curve[-2 * tenth : -tenth].mean()
    report = {
        "steps": steps,
        "seconds": round(seconds, 2),
        "lr": lr,
        "batch_size": batch_size,
        "num_classes": len(classes),
        "loss_curve": [round(float(c.mean()), 4) for c in curve.tensor_split(min(20, steps))],
        "plateau": round(float((before - last) / before), 4) if steps >= 20 else None,
        "train_acc": _generic_accuracy(flat.to(device), x_train, slots, classes, spec_all),
    }
    if test_images is not None and test_labels is not None:
        test_index, test_slots = slot_index(test_labels, classes.cpu())
        x_test = to_float(test_images[test_index]).to(device)
        report["test_acc"] = _generic_accuracy(
            flat.to(device), x_test, test_slots.to(device), classes, spec_all
        )
    log.info(
        "generic: %d steps in %.1f s, loss %.3f, accuracy %.3f train / %s test (%d-way)",
        steps,
        seconds,
        float(last),
        report["train_acc"],
        report.get("test_acc", "n/a"),
        len(classes),
    )
    return flat, report


@torch.no_grad()
def _generic_accuracy(flat: Tensor, images: Tensor, slots: Tensor, classes: Tensor, spec: NetSpec):
    body, _ = split_body(flat, spec)
    head = unflatten(flat, spec)
    correct = 0
    for start in range(0, len(images), 1024):
        feats = features(body, images[start : start + 1024], spec)
        logits = feats @ head["head.weight"][classes].T + head["head.bias"][classes]
        correct += int((logits.argmax(1) == slots[start : start + 1024]).sum())
    return round(correct / len(images), 4)


# --------------------------------------------------------------------------- selection
def select_classifier(
    generic_flat: Tensor,
    class_ids: Sequence[int] | Tensor,
    spec_all: NetSpec,
    spec_task: NetSpec,
    seed: int,
) -> Tensor:
    """The generic model with classifier selection, as a flat ``[P_task]`` vector.

    The body is the generic body (left out for a head-only ``spec_task``); head row ``j`` is
    the generic row of ``class_ids[j]``. A padding slot (``PAD``) gets a row drawn from a
    generator seeded by ``(seed, j)``.
    """
    classes = torch.as_tensor(class_ids, dtype=torch.long).reshape(-1)
    if len(classes) != spec_task.num_classes or spec_all.arch != spec_task.arch:
        raise ValueError(
            f"{len(classes)} class ids for {spec_task}: need {spec_task.num_classes} ids "
            f"(pad with {PAD}) and the generic's arch {spec_all.arch}"
        )
    if int(classes.max()) >= spec_all.num_classes or int(classes.min()) < PAD:
        raise ValueError(f"class ids {classes.tolist()} outside 0..{spec_all.num_classes - 1}")
    rows = generic_flat[spec_all.head_rows()[classes.clamp(min=0)]]
    for slot in torch.nonzero(classes == PAD).squeeze(1).tolist():
        rows[slot] = init_head_rows(1, spec_task, seeding.generator(seed, "pad", slot))[0]
    head = torch.cat([rows[:, :-1].reshape(-1), rows[:, -1]])
    if spec_task.head_only:
        return head
    return torch.cat([split_body(generic_flat, spec_all)[0], head])


# --------------------------------------------------------------------------- p-models
class _Trunk:
    """Maps a batch of image indices to what the nets read: images, or frozen-body features."""

    def __init__(self, images: Tensor, spec: NetSpec, body: Tensor | None):
        self.spec = spec
        if spec.head_only:
            with torch.no_grad():
                self.data = torch.cat([features(body, x, spec) for x in images.split(2048)])
        else:
            self.data = images

    def logits(self, flat: Tensor, index: Tensor, draws: Tensor, mode: str) -> Tensor:
        """Logits ``[T, B, k]`` of nets ``flat [T, P]`` on items ``index [T, B]``, augmented by
        ``draws [T, B, 4]`` (full nets only: frozen features are computed once, unaugmented)."""
        batch = self.data[index.reshape(-1)]
        if self.spec.head_only:
            head = unflatten(flat, self.spec)
            batch = batch.reshape(*index.shape, -1)
            return torch.baddbmm(head["head.bias"].unsqueeze(1), batch, head["head.weight"].mT)
        batch = augment(batch, draws.reshape(-1, 4), mode)
        return forward(flat, batch.reshape(*index.shape, *batch.shape[1:]), self.spec)


def _finetune_chunk(
    init: Tensor,
    classes: Tensor,
    task_ids: list,
    trunk: _Trunk,
    labels: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    augment_mode: str,
) -> Tensor:
    """Fine-tune nets ``init [T, P]`` of tasks ``classes [T, k]`` together, on the device of
    ``init`` (and of the trunk); return ``[T, P]`` there."""
    plans = []
    for ids, task_id in zip(classes, task_ids, strict=True):
        index, slots = slot_index(labels, ids)
        if len(index) == 0:
            raise ValueError(f"task {task_id} has no training images")
        generator = seeding.generator(seed, "task", task_id)
        order = _epoch_batches(len(index), steps, batch_size, generator)
        plans.append((index[order], slots[order], draw_augment(order.shape, generator)))
    batch_index, batch_slots, batch_draws = (
        torch.stack(p, dim=1).to(init.device) for p in zip(*plans, strict=True)
    )
    classes = classes.to(init.device)
    flat = init.clone().requires_grad_()
    optimizer = torch.optim.Adam([flat], lr=lr)
    for step in range(steps):
        _cosine_lr(optimizer, lr, step, steps, warmup=max(1, steps // 20))
        logits = trunk.logits(flat, batch_index[step], batch_draws[step], augment_mode)
        logits = mask_padding(logits, classes)
        per_task = F.cross_entropy(
            logits.flatten(0, 1), batch_slots[step].reshape(-1), reduction="none"
        )
        loss = per_task.reshape(len(classes), -1).mean(dim=1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return flat.detach()


def finetune_pmodels(
    dataset: Dataset,
    tasks: pd.DataFrame,
    generic_flat: Tensor,
    spec: NetSpec,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    chunk: int = 8,
    threads: int = 1,
    progress: bool = True,
    augment_mode: str = "none",
    device: torch.device | str = "cpu",
) -> tuple[Tensor, pd.DataFrame]:
    """Fine-tune one p-model per task from the generic model with classifier selection.

    ``dataset`` is a :class:`tina.data.Dataset` (only its images and labels are read). Each
    task trains on its classes' training images (labels are slots in prompt order) and is scored
    on the images of its split (:meth:`tina.data.Dataset.scoring_images`: validation tasks on
    the validation images, the others on the test images), padding slots masked. ``chunk``
    tasks train at once on ``device`` (on ``threads`` threads on the CPU). Returns ``params
    [T, P]`` (float32, on the CPU, in the order of ``tasks``) and a table with ``task_id``,
    ``acc_pmodel``, ``acc_generic`` (classifier selection) and ``seconds_per_model`` (wall time
    of the chunk, selection and scoring included, per task).
    """
    set_threads(threads)
    spec_all = spec_of_generic(generic_flat, spec)
    body = split_body(generic_flat, spec_all)[0].to(device) if spec.head_only else None
    classes = task_classes(tasks, spec.num_classes)
    task_ids = tasks["task_id"].tolist()
    trunk = _Trunk(to_float(dataset.train_images).to(device), spec, body)
    splits = tasks["split"].tolist() if "split" in tasks else ["test"] * len(tasks)
    scoring = {split: dataset.scoring_images(split) for split in set(splits)}
    scoring = {split: (to_float(images), labels) for split, (images, labels) in scoring.items()}
    params, rows = [], []
    starts = range(0, len(tasks), chunk)
    for start in progress_bar(starts, desc="p-models", unit="chunk", disable=not progress):
        tic = time.perf_counter()
        ids, tids = classes[start : start + chunk], task_ids[start : start + chunk]
        if len(ids) == 1:  # two copies take the grouped-convolution path of larger chunks
            ids, tids = ids.repeat(2, 1), tids * 2
        init = torch.stack([select_classifier(generic_flat, c, spec_all, spec, seed) for c in ids])
        init = init.to(device)
        tuned = _finetune_chunk(
            init, ids, tids, trunk, dataset.train_labels,
            steps=steps, lr=lr, batch_size=batch_size, seed=seed, augment_mode=augment_mode,
        )  # fmt: skip
        n = min(chunk, len(tasks) - start)
        acc_generic, acc_pmodel = torch.zeros(n), torch.zeros(n)
        for split, (images, labels) in scoring.items():
            own = torch.tensor([s == split for s in splits[start : start + n]])
            if own.any():
                acc_generic[own] = task_accuracy(
                    init[:n][own], ids[:n][own], images, labels, spec, body
                )
                acc_pmodel[own] = task_accuracy(
                    tuned[:n][own], ids[:n][own], images, labels, spec, body
                )
        seconds = (time.perf_counter() - tic) / n
        params.append(tuned[:n].cpu())
        for i in range(n):
            rows.append((tids[i], float(acc_pmodel[i]), float(acc_generic[i]), round(seconds, 4)))
    meta = pd.DataFrame(rows, columns=["task_id", "acc_pmodel", "acc_generic", "seconds_per_model"])
    margin = meta["acc_pmodel"] - meta["acc_generic"]
    log.info(
        "p-models: %d tasks, accuracy %.3f (classifier selection %.3f), margin %.3f +- %.3f, "
        "%.2f s per model",
        len(meta),
        meta["acc_pmodel"].mean(),
        meta["acc_generic"].mean(),
        margin.mean(),
        margin.std(),
        meta["seconds_per_model"].mean(),
    )
    return torch.cat(params).float(), meta
