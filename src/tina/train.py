"""Training Tina on the p-model zoo.

Tina diffuses over a *code* of each p-model rather than its raw parameters (:mod:`tina.codec`):
the residual from the generic model with classifier selection (the *base*), normalised per
parameter. Training adds, per sample:

- class-permutation augmentation: prompts, head rows of x0 and of the base shuffled together;
- slot dropout: some tasks keep only k' < k random classes (the rest padded and masked), so
  one model serves every class count;
- base dropout: some slots see the *neutral* base row (the mean generic row) instead of their
  class's generic row, so Tina learns to write a row from the prompt alone (unseen classes);
- prompt dropout for classifier-free guidance.

With ``functional_weight`` the loss adds the cross-entropy of the net decoded from the predicted
x0 on its task's training images. ``functional_tasks`` adds that many *fresh* tasks per batch:
new class sets of seen classes drawn like the training tasks (never a validation or test
task's set, :class:`tina.tasks.TaskDrawer`). They have no p-model, so only this cross-entropy
trains on them; their ``x_t`` is the model's own prediction from pure noise, noised to a random
level, which is what the sampler feeds it. They teach Tina class combinations that no p-model
covers.

Checkpoints are selected by the accuracy of generated models on validation tasks. What training
reads is one :class:`TrainData`, built by :func:`load_train_data` from a run's files.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from tina.codec import ParamCodec
from tina.data import load_dataset, to_float
from tina.device import MixedPrecision
from tina.diffusion import Schedule
from tina.grounding import load_settings
from tina.io import progress
from tina.nets import NetSpec, forward, score
from tina.prompts import load_embeddings
from tina.sampling import Tina, TinaConfig, build_model
from tina.seeding import derive_seed
from tina.tasks import PAD, read_tasks
from tina.train_data import (
    TrainData,
    draw_prompts,
    image_prompt_bank,
    load_train_data,
    training_rows,
    validation_slots,
)
from tina.zoo.finetune import augment, draw_augment
from tina.zoo.store import load_generic, load_zoo

log = logging.getLogger("tina.train")

MODEL_INPUTS = ("x_t", "t", "prompts", "mask", "base_in", "drop")  # a batch's transformer inputs


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, rate: float) -> None:
    """Move the EMA weights towards the model's; the rate ramps up over the first steps."""
    decay = min(rate, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)


def lr_at(step: int, cfg: TinaConfig) -> float:
    """The learning rate of ``step``: linear warm-up, then cosine decay to zero at the end."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * frac))


def augment_slots(
    classes: Tensor, params: Tensor, cfg: TinaConfig, spec: NetSpec, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Permute slots and drop slots (padding); return classes, params and mask."""
    b, k = classes.shape
    perm = torch.argsort(torch.rand(b, k, generator=g), dim=1)
    classes = classes.gather(1, perm)
    rows = spec.head_rows()
    params = params.clone()
    src = rows[perm]  # [B, k, row_len]: flat indices of the row that moves into slot j
    params[:, rows.reshape(-1)] = params.gather(1, src.reshape(b, -1))
    mask = classes >= 0
    drop = torch.rand(b, generator=g) < cfg.slot_dropout
    if drop.any():
        keep = torch.randint(2, k + 1, (b,), generator=g)
        slot = torch.arange(k).unsqueeze(0)
        mask = mask & ~(drop.unsqueeze(1) & (slot >= keep.unsqueeze(1)))
    return classes.masked_fill(~mask, PAD), params, mask


def loss_weight(mask: Tensor, spec: NetSpec) -> Tensor:
    """``[B, P]`` weights of the code loss: 1, and 0 on the head rows of the padding slots
    (``mask [B, k]`` False)."""
    rows = spec.head_rows()
    weight = torch.ones(len(mask), spec.num_params)
    weight[:, rows.reshape(-1)] = (
        mask.unsqueeze(-1).expand(-1, -1, rows.shape[1]).reshape(len(mask), -1).float()
    )
    return weight


def _functional_loss(
    params: Tensor,
    mask: Tensor,
    images: Tensor,
    target: Tensor,
    spec: NetSpec,
    body: Tensor | None,
) -> Tensor:
    """Cross-entropy of the decoded nets on their tasks' training images ``images [b, n, ...]``
    (drawn by :func:`_draw_batch` or :func:`_draw_fresh`), labelled by slot ``target [b, n]``."""
    b, n = target.shape
    logits = forward(params, images, spec, body=body)
    logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
    return F.cross_entropy(logits.reshape(b * n, -1), target.reshape(-1))


def functional_images(images: Tensor, batch: dict, mode: str) -> Tensor:
    """Training images ``[b, n, C, H, W]`` at ``batch["fn_index"]``, augmented in ``mode`` by
    the batch's ``fn_draws`` (drawn only when the mode augments)."""
    index = batch["fn_index"]
    picked = images[index.reshape(-1)]
    if "fn_draws" in batch:
        picked = augment(picked, batch["fn_draws"].reshape(-1, 4), mode)
    return picked.reshape(*index.shape, *images.shape[1:])


@torch.no_grad()
def _noised_own_guess(model, fresh: dict, schedule: Schedule, amp: MixedPrecision) -> Tensor:
    """``x_t`` of fresh tasks: their x0 is the model's own prediction from pure noise (what the
    sampler's first step sees), noised to each task's level ``t``."""
    top = torch.full_like(fresh["t"], schedule.T - 1)
    base_in = fresh["base_in"] if model.use_base else None
    with amp.autocast():
        guess = model(fresh["noise_T"], top, fresh["prompts"], fresh["mask"], base_in)
    return schedule.q_sample(guess.float(), fresh["t"], fresh["noise"])


def _draw_batch(data: TrainData, codec, schedule, cfg, g, by_class=None):
    """One global training batch: augmented tasks, their codes, noise level and noised codes,
    and with ``by_class`` (see :func:`_class_index`) the training images of the functional loss:
    every draw is made here, for the whole batch, so data-parallel ranks see the same batch."""
    idx = torch.randint(len(data.params), (cfg.batch_size,), generator=g)
    spec = codec.spec
    classes, params, mask = augment_slots(data.classes[idx], data.params[idx], cfg, spec, g)
    slots = draw_prompts(data, classes, cfg, g)
    base = codec.base_from_rows(data.grounding.ground(slots), mask)
    x0 = codec.encode(params, base)
    t = torch.randint(0, schedule.T, (cfg.batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    batch = {
        "classes": classes,
        "mask": mask,
        "base": base,
        "base_in": base / codec.std if cfg.residual else torch.zeros_like(base),
        "x0": x0,
        "t": t,
        "x_t": schedule.q_sample(x0, t, noise),
        "prompts": slots.prompts(),
        "drop": torch.rand(cfg.batch_size, generator=g) < cfg.prompt_dropout,
        "weight": loss_weight(mask, spec),
    }
    if by_class is not None:
        n = cfg.functional_images
        target = torch.multinomial(mask.float(), n, replacement=True, generator=g)  # slots
        pick = (torch.rand(cfg.batch_size, n, generator=g) * by_class.shape[1]).long()
        batch["fn_target"] = target
        batch["fn_index"] = by_class[classes.gather(1, target), pick]
        if cfg.functional_augment != "none":
            batch["fn_draws"] = draw_augment((cfg.batch_size, n), g)
    return batch


def _draw_fresh(data: TrainData, codec, schedule, cfg, g, by_class):
    """Fresh tasks for the functional loss alone (:class:`tina.tasks.TaskDrawer`): no p-model
    exists for them, so they are noised from the model's own prediction (see :func:`train_tina`)
    and only the cross-entropy of their decoded nets on their training images trains on them."""
    n, images = cfg.functional_tasks, cfg.functional_images
    classes = data.drawer.draw(n, g)
    mask = torch.ones_like(classes, dtype=torch.bool)
    slots = draw_prompts(data, classes, cfg, g)
    base = codec.base_from_rows(data.grounding.ground(slots), mask)
    target = torch.randint(classes.shape[1], (n, images), generator=g)
    pick = (torch.rand(n, images, generator=g) * by_class.shape[1]).long()
    fresh = {
        "mask": mask,
        "base": base,
        "base_in": base / codec.std if cfg.residual else torch.zeros_like(base),
        "prompts": slots.prompts(),
        "noise_T": torch.randn(n, codec.spec.num_params, generator=g),
        "t": torch.randint(0, schedule.T, (n,), generator=g),
        "noise": torch.randn(n, codec.spec.num_params, generator=g),
        "fn_target": target,
        "fn_index": by_class[classes.gather(1, target), pick],
    }
    if cfg.functional_augment != "none":
        fresh["fn_draws"] = draw_augment((n, images), g)
    return fresh


def train_tina(
    data: TrainData,
    cfg: TinaConfig,
    *,
    seed: int,
    dist=None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> tuple[Tina, pd.DataFrame]:
    """Train Tina on the training p-models ``data.params [N, P]`` of tasks ``data.classes``.

    Every ``eval_every`` steps the EMA model generates nets for ``data.val_tasks`` and the best
    validation accuracy picks the returned checkpoint.

    ``dist`` (a :class:`tina.distributed.Distributed`) splits every batch across processes:
    each rank draws the same global batch, computes its slice, and the gradients are summed, so
    the result matches one process with the same global batch.

    ``device`` (default the CPU, or ``dist.device``) runs the model; batches are drawn on the
    CPU and moved, so the random draws do not depend on the device. ``precision`` bf16/fp16
    autocasts the forward pass on CUDA (fp32 on the CPU). The returned model is on the CPU.

    ``data.drawer`` (a :class:`tina.tasks.TaskDrawer`) supplies the ``cfg.functional_tasks``
    fresh tasks of every batch; without one, Tina trains on the zoo's tasks only.
    """
    spec = data.spec
    is_main = dist is None or dist.rank == 0
    device = dist.device if dist is not None else torch.device(device or "cpu")
    amp = MixedPrecision(device, precision)
    g = torch.Generator().manual_seed(derive_seed(seed, "tina-train"))
    codec = ParamCodec.fit(
        data.params, data.classes, data.generic, spec, residual=cfg.residual,
        normalize=cfg.normalize, rows=training_rows(data, cfg, seed),
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "tina-init"))
        model = build_model(spec, data.class_emb.shape[1], cfg)
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    schedule = Schedule(cfg.schedule, cfg.timesteps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tina = Tina(
        ema, codec, schedule, spec, cfg, data.class_names, data.known, meta={},
        grounding=data.grounding,
    )  # fmt: skip
    functional = cfg.functional_weight > 0
    images_f = to_float(data.images).to(device) if functional else None
    body = codec.body().to(device) if spec.head_only else None
    codec_on_device = codec.to(device)
    by_class = data.by_class if functional else None
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "Tina: %d parameters, %d training p-models of %d parameters, %d steps",
        n_params, len(data.params), spec.num_params, cfg.steps,
    )  # fmt: skip

    val_prompts = validation_slots(data, data.val_tasks, cfg, seed)
    history, best, best_state = [], -1.0, None
    window = []  # training losses since the last evaluation
    start = time.perf_counter()
    rank = dist.shard(cfg.batch_size) if dist is not None else slice(None)
    fresh_tasks = data.drawer is not None and cfg.functional_tasks > 0 and functional
    fresh_rank = (
        dist.shard(cfg.functional_tasks) if dist is not None and fresh_tasks else slice(None)
    )
    for step in progress(range(cfg.steps), desc="train_tina", disable=not is_main):
        model.train()
        batch = _draw_batch(data, codec, schedule, cfg, g, by_class)
        local = {name: value[rank].to(device) for name, value in batch.items()}
        parts = [local]
        if fresh_tasks:
            fresh_batch = _draw_fresh(data, codec, schedule, cfg, g, by_class)
            fresh = {name: value[fresh_rank].to(device) for name, value in fresh_batch.items()}
            fresh["x_t"] = _noised_own_guess(model, fresh, schedule, amp)
            fresh["drop"] = torch.zeros_like(fresh["t"], dtype=torch.bool)
            parts.append(fresh)
        inputs = {name: torch.cat([part[name] for part in parts]) for name in MODEL_INPUTS}
        with amp.autocast():
            out = model(
                inputs["x_t"], inputs["t"], inputs["prompts"], inputs["mask"],
                inputs["base_in"] if cfg.residual else None, inputs["drop"],
            )  # fmt: skip
        x0_hat = out[: len(local["t"])]
        # normalised by the GLOBAL weight, so summing ranks' gradients gives the batch gradient
        loss = ((x0_hat - local["x0"]) ** 2 * local["weight"]).sum() / batch["weight"].sum()
        fn_loss, fresh_loss = torch.zeros(()), torch.zeros(())
        if functional:
            nets = codec_on_device.decode(x0_hat.float(), local["base"])
            fn_images = functional_images(images_f, local, cfg.functional_augment)
            fn_loss = _functional_loss(
                nets, local["mask"], fn_images, local["fn_target"], spec, body
            )
            loss = loss + cfg.functional_weight * fn_loss * len(x0_hat) / cfg.batch_size
        if fresh_tasks:
            nets = codec_on_device.decode(out[len(x0_hat) :].float(), fresh["base"])
            fn_images = functional_images(images_f, fresh, cfg.functional_augment)
            fresh_loss = _functional_loss(
                nets, fresh["mask"], fn_images, fresh["fn_target"], spec, body
            )
            share = len(fresh["t"]) / cfg.functional_tasks
            loss = loss + cfg.functional_weight * fresh_loss * share
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        amp.backward(loss)
        if dist is not None:
            dist.sum_gradients(model)
        amp.unscale(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        amp.step(opt)
        update_ema(ema, model, step, cfg.ema)
        if dist is not None:  # the global batch's losses, for the log
            loss = dist.all_sum(loss)
            fn_loss, fresh_loss = (dist.all_sum(x) / dist.world for x in (fn_loss, fresh_loss))
        window.append(loss.item())
        last = step + 1 == cfg.steps
        if is_main and ((step + 1) % cfg.eval_every == 0 or last):
            by_kind = validate(
                tina, data.val_tasks, val_prompts, data.val_images, data.val_labels, seed
            )
            acc = sum(by_kind.values()) / len(by_kind)
            history.append(
                {
                    **{f"val_{kind}": value for kind, value in by_kind.items()},
                    "step": step + 1,
                    "loss": sum(window) / len(window),
                    "functional_loss": fn_loss.item(),
                    "fresh_loss": fresh_loss.item(),
                    "val_accuracy": acc,
                    "seconds": time.perf_counter() - start,
                }
            )
            log.info("step %d loss %.4f val accuracy %.4f", step + 1, history[-1]["loss"], acc)
            window = []
            if acc > best:
                best, best_state = acc, copy.deepcopy(ema.state_dict())
    if best_state is not None:  # ranks other than 0 do not validate
        ema.load_state_dict(best_state)
    ema.to("cpu")
    tina.meta = {
        "val_accuracy": best,
        "train_seconds": time.perf_counter() - start,
        "parameters": n_params,
    }
    log.info("selected checkpoint: validation accuracy %.4f", best)
    return tina, pd.DataFrame(history)


def validate(tina: Tina, tasks: pd.DataFrame, prompts: dict, images, labels, seed: int) -> dict:
    """Mean accuracy of one generated net per validation task, for each prompt kind of
    ``prompts`` (:func:`validation_slots`), scored on ``images``."""
    body = tina.codec.body() if tina.spec.head_only else None
    out = {}
    for kind, slots in prompts.items():
        params = tina.generate(slots, seed=derive_seed(seed, "validate"))
        out[kind] = float(score(params, tasks, images, labels, tina.spec, body=body).mean())
    return out


# --------------------------------------------------------------------------- the stage
def train_tina_stage(
    inputs, section: dict, seed: int, *, encoder: dict, shots: Sequence[int], dist=None,
    device: torch.device | str | None = None,
) -> tuple[Tina, pd.DataFrame]:  # fmt: skip
    """Load the zoo, prompts, grounding and data named by ``inputs`` and train Tina on the
    train split; ``encoder`` (the config section) and ``inputs.projection`` give the training
    images' image prompts, ``shots`` the shot counts of image prompts.

    ``dist`` and ``device``: as in :func:`train_tina`; ``section["precision"]`` sets autocast.
    """
    cfg = TinaConfig.from_config(section)
    tasks = read_tasks(inputs.tasks)
    class_split = None
    if cfg.functional_tasks > 0:  # fresh tasks are drawn from the class split's groups
        class_split = pd.read_csv(inputs.class_split, keep_default_na=False)
    dataset = load_dataset(inputs.dataset, inputs.classes)
    embeddings = load_embeddings(inputs.embeddings)
    generic = load_generic(inputs.generic)
    bank = image_prompt_bank(
        encoder, inputs.projection, generic, embeddings["names"].shape[1], dataset.train_images,
        dist.device if dist is not None else torch.device(device or "cpu"),
    )  # fmt: skip
    data = load_train_data(
        dataset, tasks, embeddings, generic, load_zoo(list(inputs.zoo)),
        load_settings(inputs.grounding), bank, shots=shots, class_split=class_split,
    )  # fmt: skip
    return train_tina(
        data, cfg, seed=seed, dist=dist, device=device,
        precision=section.get("precision", "fp32"),
    )  # fmt: skip
