"""Training Tina on the p-model zoo, and generating parameters with it.

Tina diffuses over a *code* of each p-model rather than its raw parameters: the residual from
the generic model with classifier selection (the *base*), normalised per parameter. Head rows
share their statistics across class slots, so the code stays equivariant to the class order.
Training adds, per sample:

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

Checkpoints are selected by the accuracy of generated models on validation tasks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from tina.device import MixedPrecision
from tina.diffusion import Schedule, ddim_sample, ddpm_sample, guided
from tina.io import load_tensors, progress, save_tensors
from tina.model import ParamLayout, TinaTransformer
from tina.nets import NetSpec, forward, split_body
from tina.tasks import TaskDrawer
from tina.zoo import PAD, _as_float, augment, derive_seed, draw_augment, evaluate

log = logging.getLogger("tina.train")

MODEL_INPUTS = ("x_t", "t", "prompts", "mask", "base_in", "drop")  # a batch's transformer inputs


@dataclass(frozen=True)
class TinaConfig:
    """The ``tina`` config section (defaults are the schema's)."""

    width: int = 128
    depth: int = 3
    heads: int = 4
    chunk_size: int = 128
    dropout: float = 0.0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    ema: float = 0.995
    grad_clip: float = 1.0
    prompt_dropout: float = 0.1
    slot_dropout: float = 0.2
    base_dropout: float = 0.1
    residual: bool = True
    normalize: bool = True
    schedule: str = "linear"
    timesteps: int = 1000
    functional_weight: float = 0.0
    functional_images: int = 8
    functional_tasks: int = 0
    functional_augment: str = "none"
    eval_every: int = 500
    eval_sampler_steps: int = 10
    guidance: float = 1.0

    @classmethod
    def from_config(cls, section: dict) -> TinaConfig:
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def layout_of(spec: NetSpec) -> ParamLayout:
    return ParamLayout.from_named_shapes(spec.param_shapes())


# --------------------------------------------------------------------------- the code space
class ParamCodec:
    """Maps parameters to Tina's diffusion space and back: ``x0 = (p - base - mean) / std``."""

    def __init__(
        self,
        spec: NetSpec,
        mean: Tensor,
        std: Tensor,
        neutral_row: Tensor,
        generic: Tensor,
        residual: bool,
    ):
        self.spec = spec
        self.mean, self.std = mean, std
        self.neutral_row = neutral_row
        self.generic = generic
        self.residual = residual
        self.rows = spec.head_rows()
        self.spec_all = spec.with_classes(self._num_generic_rows(), head_only=False)

    def _num_generic_rows(self) -> int:
        body = self.spec.with_classes(1, head_only=False).body_size
        return (self.generic.numel() - body) // (self.spec.feature_dim + 1)

    # base parameters ---------------------------------------------------------------
    def body(self) -> Tensor:
        """The generic body (the frozen feature extractor of head-only nets)."""
        return split_body(self.generic, self.spec_all)[0]

    def generic_rows(self) -> Tensor:
        """``[C, row_len]``: every class's generic head row (weight row then bias)."""
        return self.generic[self.spec_all.head_rows()]

    def base(self, classes: Tensor, known: Tensor) -> Tensor:
        """Classifier-selected generic parameters ``[B, P]`` for ``classes [B, k]``.

        Slots whose class is padding or not ``known`` (``known [B, k]`` False) get the neutral
        row; with ``residual`` off the base is zero.
        """
        b = classes.shape[0]
        out = torch.zeros(b, self.spec.num_params)
        if not self.residual:
            return out
        if not self.spec.head_only:
            body = split_body(self.generic, self.spec_all)[0]
            out[:, : body.numel()] = body
        rows = self.generic_rows()[classes.clamp(min=0)]
        use = (known & (classes >= 0)).unsqueeze(-1)
        rows = torch.where(use, rows, self.neutral_row.expand_as(rows))
        out[:, self.rows.reshape(-1)] = rows.reshape(b, -1)
        return out

    # code <-> params ---------------------------------------------------------------
    def encode(self, params: Tensor, base: Tensor) -> Tensor:
        return (params - base - self.mean) / self.std

    def decode(self, code: Tensor, base: Tensor) -> Tensor:
        return code * self.std + self.mean + base

    @classmethod
    def fit(
        cls,
        params: Tensor,
        classes: Tensor,
        generic: Tensor,
        spec: NetSpec,
        *,
        residual: bool,
        normalize: bool,
    ) -> ParamCodec:
        """Statistics of the training residuals; head rows pooled over slots."""
        p = spec.num_params
        probe = cls(
            spec,
            torch.zeros(p),
            torch.ones(p),
            torch.zeros(spec.feature_dim + 1),
            generic,
            residual,
        )
        known_rows = probe.generic_rows()[classes[classes >= 0].unique()]
        probe.neutral_row = known_rows.mean(0)
        resid = params - probe.base(classes, torch.ones_like(classes, dtype=torch.bool))
        mean, std = torch.zeros(p), torch.ones(p)
        if normalize:
            mean, std = resid.mean(0), resid.std(0)
            rows = probe.rows
            head = resid[:, rows]  # [N, k, row_len]
            mean[rows] = head.mean((0, 1)).expand(rows.shape)
            std[rows] = head.std((0, 1)).expand(rows.shape)
            # a floor keeps dead units (near-constant parameters) from blowing up the code
            std = std.clamp(min=0.1 * float(std.median()))
        return cls(spec, mean, std, probe.neutral_row, generic, residual)

    def to(self, device: torch.device | str) -> ParamCodec:
        """The same code space with its tensors on ``device``."""
        return ParamCodec(
            self.spec,
            self.mean.to(device),
            self.std.to(device),
            self.neutral_row.to(device),
            self.generic.to(device),
            self.residual,
        )

    def state(self) -> dict[str, Tensor]:
        return {
            "codec.mean": self.mean,
            "codec.std": self.std,
            "codec.neutral_row": self.neutral_row,
            "codec.generic": self.generic,
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor], spec: NetSpec, residual: bool) -> ParamCodec:
        return cls(
            spec,
            state["codec.mean"],
            state["codec.std"],
            state["codec.neutral_row"],
            state["codec.generic"],
            residual,
        )


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_codes(
    model: TinaTransformer,
    schedule: Schedule,
    prompts: Tensor,
    mask: Tensor,
    base_code: Tensor | None,
    *,
    sampler: str = "ddim",
    steps: int = 10,
    seed: int = 0,
    guidance: float = 1.0,
) -> Tensor:
    """Sample codes ``[B, P]`` for prompts ``[B, k, D]``; the seed fixes every noise draw.

    Runs on the model's device (noise drawn on the CPU, so a seed gives the same draws on any
    device); the codes come back on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    prompts, mask = prompts.to(device), mask.to(device)
    base_code = None if base_code is None else base_code.to(device)
    fn = guided(model, guidance, prompts, mask, base_code)
    shape = (prompts.shape[0], model.layout.P)
    if sampler == "ddpm":
        return ddpm_sample(fn, shape, schedule, generator, device=device).cpu()
    return ddim_sample(fn, shape, schedule, steps, generator, device=device).cpu()


@dataclass
class Tina:
    """A trained Tina: the transformer, its code space and what it was trained with."""

    model: TinaTransformer
    codec: ParamCodec
    schedule: Schedule
    spec: NetSpec
    config: TinaConfig
    class_names: list[str]
    known: Tensor  # [C] bool: classes whose generic row is trained (seen classes)
    meta: dict

    def generate(
        self,
        prompts: Tensor,
        mask: Tensor,
        classes: Tensor | None = None,
        *,
        samples: int = 1,
        sampler: str = "ddim",
        steps: int | None = None,
        seed: int = 0,
        guidance: float | None = None,
    ) -> Tensor:
        """Parameters ``[B * samples, P]`` (task-major) of nets for prompts ``[B, k, D]``.

        ``classes [B, k]`` names the data set's class of each slot (-1 = a prompt with no
        known class, e.g. a new name); known classes start from their generic row.
        """
        b, k = mask.shape
        if classes is None:
            classes = torch.full((b, k), PAD, dtype=torch.long)
        known = self.known[classes.clamp(min=0)] & (classes >= 0)
        base = self.codec.base(classes, known)

        def reps(x):
            return None if x is None else x.repeat_interleave(samples, 0)

        base_code_in = reps(self._base_input(base))
        codes = sample_codes(
            self.model,
            self.schedule,
            reps(prompts),
            reps(mask),
            base_code_in,
            sampler=sampler,
            steps=steps or self.config.eval_sampler_steps,
            seed=seed,
            guidance=self.config.guidance if guidance is None else guidance,
        )
        params = self.codec.decode(codes, reps(base))
        return _zero_padding(params, reps(mask), self.spec)

    def _base_input(self, base: Tensor) -> Tensor | None:
        """What the model sees of the base: the base scaled like the code (None without one)."""
        return base / self.codec.std if self.config.residual else None


def _zero_padding(params: Tensor, mask: Tensor, spec: NetSpec) -> Tensor:
    rows = spec.head_rows()
    params = params.clone()
    pad = ~mask
    if pad.any():
        idx = rows.unsqueeze(0).expand(mask.shape[0], -1, -1)[pad]
        params[pad.nonzero()[:, 0].unsqueeze(1).expand_as(idx), idx] = 0.0
    return params


# --------------------------------------------------------------------------- training
@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, rate: float) -> None:
    """Move the EMA weights towards the model's; the rate ramps up over the first steps."""
    decay = min(rate, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)


def _lr_at(step: int, cfg: TinaConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * frac))


def _augment(
    classes: Tensor, params: Tensor, cfg: TinaConfig, spec: NetSpec, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Permute slots, drop slots (padding) and base rows; return classes, params, mask, known."""
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
    known = torch.rand(b, k, generator=g) >= cfg.base_dropout
    return classes.masked_fill(~mask, PAD), params, mask, known


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


def _functional_images(images: Tensor, batch: dict, mode: str) -> Tensor:
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


def _class_index(labels: Tensor, n_classes: int) -> Tensor:
    """``[C, m]`` training image indices per class (cycled to the largest class's count)."""
    pools = [torch.nonzero(labels == c).squeeze(1) for c in range(n_classes)]
    m = max(len(p) for p in pools)
    return torch.stack(
        [
            p.repeat(m // max(len(p), 1) + 1)[:m] if len(p) else torch.zeros(m, dtype=torch.long)
            for p in pools
        ]
    )


def _draw_batch(zoo_params, zoo_classes, known, codec, class_emb, schedule, cfg, g, by_class=None):
    """One global training batch: augmented tasks, their codes, noise level and noised codes,
    and with ``by_class`` (see :func:`_class_index`) the training images of the functional loss:
    every draw is made here, for the whole batch, so data-parallel ranks see the same batch."""
    idx = torch.randint(len(zoo_params), (cfg.batch_size,), generator=g)
    spec = codec.spec
    classes, params, mask, known_slots = _augment(zoo_classes[idx], zoo_params[idx], cfg, spec, g)
    base = codec.base(classes, known_slots & known[classes.clamp(min=0)])
    x0 = codec.encode(params, base)
    t = torch.randint(0, schedule.T, (cfg.batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    rows = spec.head_rows()
    weight = torch.ones_like(x0)
    weight[:, rows.reshape(-1)] = (
        mask.unsqueeze(-1).expand(-1, -1, rows.shape[1]).reshape(cfg.batch_size, -1).float()
    )
    batch = {
        "classes": classes,
        "mask": mask,
        "base": base,
        "base_in": base / codec.std if cfg.residual else torch.zeros_like(base),
        "x0": x0,
        "t": t,
        "x_t": schedule.q_sample(x0, t, noise),
        "prompts": class_emb[classes.clamp(min=0)] * mask.unsqueeze(-1),
        "drop": torch.rand(cfg.batch_size, generator=g) < cfg.prompt_dropout,
        "weight": weight,
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


def _draw_fresh(drawer, known, codec, class_emb, schedule, cfg, g, by_class):
    """Fresh tasks for the functional loss alone (:class:`tina.tasks.TaskDrawer`): no p-model
    exists for them, so they are noised from the model's own prediction (see :func:`train_tina`)
    and only the cross-entropy of their decoded nets on their training images trains on them."""
    n, images = cfg.functional_tasks, cfg.functional_images
    classes = drawer.draw(n, g)
    mask = torch.ones_like(classes, dtype=torch.bool)
    base = codec.base(classes, known[classes])
    target = torch.randint(classes.shape[1], (n, images), generator=g)
    pick = (torch.rand(n, images, generator=g) * by_class.shape[1]).long()
    fresh = {
        "mask": mask,
        "base": base,
        "base_in": base / codec.std if cfg.residual else torch.zeros_like(base),
        "prompts": class_emb[classes],
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
    zoo_params: Tensor,
    zoo_classes: Tensor,
    generic: Tensor,
    spec: NetSpec,
    class_emb: Tensor,
    known: Tensor,
    val_tasks: pd.DataFrame,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    cfg: TinaConfig,
    seed: int,
    class_names: list[str],
    dist=None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    drawer: TaskDrawer | None = None,
) -> tuple[Tina, pd.DataFrame]:
    """Train Tina on training p-models ``zoo_params [N, P]`` of tasks ``zoo_classes [N, k]``.

    ``class_emb [C, D]`` holds each class's prompt embedding, ``known [C]`` which classes the
    generic model was trained on. Every ``eval_every`` steps the EMA model generates nets for
    ``val_tasks`` and the best validation accuracy picks the returned checkpoint.

    ``dist`` (a :class:`tina.distributed.Distributed`) splits every batch across processes:
    each rank draws the same global batch, computes its slice, and the gradients are summed, so
    the result matches one process with the same global batch.

    ``device`` (default the CPU, or ``dist.device``) runs the model; batches are drawn on the
    CPU and moved, so the random draws do not depend on the device. ``precision`` bf16/fp16
    autocasts the forward pass on CUDA (fp32 on the CPU). The returned model is on the CPU.

    ``drawer`` (a :class:`tina.tasks.TaskDrawer`) supplies the ``cfg.functional_tasks`` fresh
    tasks of every batch; without one, Tina trains on the zoo's tasks only.
    """
    is_main = dist is None or dist.rank == 0
    device = dist.device if dist is not None else torch.device(device or "cpu")
    amp = MixedPrecision(device, precision)
    g = torch.Generator().manual_seed(derive_seed(seed, "tina-train"))
    codec = ParamCodec.fit(
        zoo_params, zoo_classes, generic, spec, residual=cfg.residual, normalize=cfg.normalize
    )
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "tina-init"))
        model = TinaTransformer(
            layout_of(spec),
            class_emb.shape[1],
            width=cfg.width,
            depth=cfg.depth,
            heads=cfg.heads,
            chunk_size=cfg.chunk_size,
            dropout=cfg.dropout,
            use_base=cfg.residual,
        )
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    schedule = Schedule(cfg.schedule, cfg.timesteps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tina = Tina(ema, codec, schedule, spec, cfg, class_names, known, meta={})
    images_f = _as_float(images).to(device) if cfg.functional_weight > 0 else None
    body = codec.body().to(device) if spec.head_only else None
    codec_on_device = codec.to(device)
    by_class = _class_index(labels, len(class_names)) if cfg.functional_weight > 0 else None
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "Tina: %d parameters, %d training p-models of %d parameters, %d steps",
        n_params,
        len(zoo_params),
        spec.num_params,
        cfg.steps,
    )

    history, best, best_state = [], -1.0, None
    window = []  # training losses since the last evaluation
    start = time.perf_counter()
    rank = dist.shard(cfg.batch_size) if dist is not None else slice(None)
    fresh_tasks = drawer is not None and cfg.functional_tasks > 0 and cfg.functional_weight > 0
    fresh_rank = (
        dist.shard(cfg.functional_tasks) if dist is not None and fresh_tasks else slice(None)
    )
    for step in progress(range(cfg.steps), desc="train_tina", disable=not is_main):
        model.train()
        batch = _draw_batch(
            zoo_params, zoo_classes, known, codec, class_emb, schedule, cfg, g, by_class
        )
        local = {name: value[rank].to(device) for name, value in batch.items()}
        parts = [local]
        if fresh_tasks:
            fresh_batch = _draw_fresh(drawer, known, codec, class_emb, schedule, cfg, g, by_class)
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
        if cfg.functional_weight > 0:
            nets = codec_on_device.decode(x0_hat.float(), local["base"])
            fn_images = _functional_images(images_f, local, cfg.functional_augment)
            fn_loss = _functional_loss(
                nets, local["mask"], fn_images, local["fn_target"], spec, body
            )
            loss = loss + cfg.functional_weight * fn_loss * len(x0_hat) / cfg.batch_size
        if fresh_tasks:
            nets = codec_on_device.decode(out[len(x0_hat) :].float(), fresh["base"])
            fn_images = _functional_images(images_f, fresh, cfg.functional_augment)
            fresh_loss = _functional_loss(
                nets, fresh["mask"], fn_images, fresh["fn_target"], spec, body
            )
            share = len(fresh["t"]) / cfg.functional_tasks
            loss = loss + cfg.functional_weight * fresh_loss * share
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
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
            acc = validate(tina, val_tasks, class_emb, test_images, test_labels, seed)
            history.append(
                {
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


def task_prompts(classes: Tensor, class_emb: Tensor) -> tuple[Tensor, Tensor]:
    """Prompt embeddings ``[B, k, D]`` and mask of tasks ``classes [B, k]`` (PAD = -1)."""
    mask = classes >= 0
    return class_emb[classes.clamp(min=0)] * mask.unsqueeze(-1), mask


def validate(
    tina: Tina, tasks: pd.DataFrame, class_emb: Tensor, images: Tensor, labels: Tensor, seed: int
) -> float:
    """Mean accuracy of one generated net per validation task."""
    from tina.zoo import task_classes

    classes = task_classes(tasks, tina.spec.num_classes)
    prompts, mask = task_prompts(classes, class_emb)
    params = tina.generate(prompts, mask, classes, seed=derive_seed(seed, "validate"))
    body = tina.codec.body() if tina.spec.head_only else None
    return float(evaluate(params, tasks, images, labels, tina.spec, body=body).mean())


# --------------------------------------------------------------------------- checkpoints
def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """sha256 of tensors' names, dtypes, shapes and bytes, in name order (device independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{list(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tina(tina: Tina, path) -> None:
    """Write a Tina checkpoint; its metadata records the sha256 of the tensors it holds."""
    tensors = {f"model.{k}": v for k, v in tina.model.state_dict().items()}
    tensors.update(tina.codec.state())
    tensors["known"] = tina.known.to(torch.uint8)
    meta = {
        "config": json.dumps(asdict(tina.config)),
        "spec": tina.spec.to_json(),
        "prompt_dim": str(tina.model.prompt_dim),
        "class_names": json.dumps(tina.class_names),
        "meta": json.dumps(tina.meta),
        "tensors_sha256": tensors_sha256(tensors),
    }
    save_tensors(path, tensors, metadata=meta)


def load_tina(path) -> Tina:
    """Read a checkpoint written by :func:`save_tina`; a file whose tensors do not match their
    recorded sha256 (flipped bits, a tampered file) raises ValueError. Checkpoints from before
    the hash was recorded load unchecked."""
    from safetensors import safe_open

    tensors = load_tensors(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    recorded = meta.get("tensors_sha256")
    if recorded is not None and recorded != tensors_sha256(tensors):
        raise ValueError(f"{path}: its tensors do not match their recorded sha256")
    try:
        cfg = TinaConfig(**json.loads(meta["config"]))
        spec = NetSpec.from_json(meta["spec"])
        prompt_dim = int(meta["prompt_dim"])
        class_names = json.loads(meta["class_names"])
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a Tina checkpoint (metadata: {err})") from None
    model = TinaTransformer(
        layout_of(spec),
        prompt_dim,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        chunk_size=cfg.chunk_size,
        dropout=cfg.dropout,
        use_base=cfg.residual,
    )
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.eval()
    codec = ParamCodec.from_state(tensors, spec, cfg.residual)
    return Tina(
        model,
        codec,
        Schedule(cfg.schedule, cfg.timesteps),
        spec,
        cfg,
        class_names,
        tensors["known"].bool(),
        json.loads(meta.get("meta", "{}")),
    )


# --------------------------------------------------------------------------- the stage
def train_tina_stage(
    inputs, section: dict, seed: int, *, dist=None, device: torch.device | str | None = None
) -> tuple[Tina, pd.DataFrame]:
    """Load the zoo, prompts and data named by ``inputs`` and train Tina on the train split.

    ``dist`` and ``device``: as in :func:`train_tina`; ``section["precision"]`` sets autocast.
    """
    from tina.data import load_dataset
    from tina.prompts import load_embeddings
    from tina.shards import load_generic, load_zoo
    from tina.tasks import read_tasks
    from tina.zoo import task_classes

    dataset = load_dataset(inputs.dataset, inputs.classes)
    tasks = read_tasks(inputs.tasks)
    cfg = TinaConfig.from_config(section)
    drawer = None
    if cfg.functional_tasks > 0:  # fresh tasks are drawn from the class split's groups
        split = pd.read_csv(inputs.class_split, keep_default_na=False)
        drawer = TaskDrawer.from_tables(split, tasks)
    generic = load_generic(inputs.generic)
    zoo = load_zoo(list(inputs.zoo))
    k = int(tasks["k"].max())
    spec = zoo.spec
    train = zoo.meta["split"] == "train"
    params = zoo.params[torch.as_tensor(train.to_numpy())]
    classes = task_classes(zoo.meta[train], k)
    class_emb = load_embeddings(inputs.embeddings)["names"]
    known = generic.trained
    val_tasks = tasks[tasks["split"] == "val"]
    return train_tina(
        params, classes, generic.flat, spec, class_emb, known, val_tasks,
        dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels,
        cfg, seed, dataset.classes["name"].tolist(),
        dist=dist, device=device, precision=section.get("precision", "fp32"), drawer=drawer,
    )  # fmt: skip
