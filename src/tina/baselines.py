"""Baselines that Tina is compared with, all trained on the same zoo and prompts.

- *retrieval*: the training p-model whose prompt is nearest (mean of its class embeddings), its
  head rows matched class by class to the task's classes (identical classes map exactly);
- *ridge*: closed-form ridge regression from the prompt to the code of the p-model (the
  normalised residual over the classifier-selected generic parameters): each head row from its
  own class embedding, the body from the task's mean embedding;
- *hypernetwork*: Tina's transformer trained as a deterministic regressor (no noise, one
  forward pass) on the same code: what remains when diffusion is taken away.

The generic model with classifier selection and the fine-tuned p-models come from the zoo.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from tina.codec import ParamCodec, layout_of
from tina.grounding import NAME, UNKNOWN
from tina.io import progress
from tina.model import TinaTransformer
from tina.sampling import Tina, name_slots, task_prompts, zero_padding
from tina.seeding import derive_seed
from tina.train import augment_slots, loss_weight, lr_at, update_ema

log = logging.getLogger("tina.baselines")

UNKNOWN_SHARE = 0.1
"""Share of the hypernetwork's training slots grounded as unknown names."""


def _prompt_vectors(classes: Tensor, class_emb: Tensor) -> Tensor:
    """Mean class embedding of each task ``[B, D]``, L2-normalised."""
    prompts, mask = task_prompts(classes, class_emb)
    mean = prompts.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return torch.nn.functional.normalize(mean, dim=1)


# --------------------------------------------------------------------------- retrieval
def retrieve(
    classes: Tensor,
    zoo_params: Tensor,
    zoo_classes: Tensor,
    class_emb: Tensor,
    spec,
) -> Tensor:
    """Nearest training p-model for each task ``classes [B, k]``, rows matched to its classes."""
    query = _prompt_vectors(classes, class_emb)
    bank = _prompt_vectors(zoo_classes, class_emb)
    nearest = (query @ bank.T).argmax(1)
    rows = spec.head_rows()
    out = zoo_params[nearest].clone()
    for i, j in enumerate(nearest.tolist()):
        mask = classes[i] >= 0
        ours = class_emb[classes[i][mask]]
        theirs_ok = zoo_classes[j] >= 0
        theirs = class_emb[zoo_classes[j][theirs_ok]]
        slots_theirs = theirs_ok.nonzero().squeeze(1)
        cost = -(ours @ theirs.T).numpy()
        r, c = linear_sum_assignment(cost)
        src = rows[slots_theirs[torch.as_tensor(c)]]
        dst = rows[mask.nonzero().squeeze(1)[torch.as_tensor(r)]]
        out[i, dst.reshape(-1)] = zoo_params[j, src.reshape(-1)]
    return zero_padding(out, classes >= 0, spec)


# --------------------------------------------------------------------------- ridge
class Ridge:
    """Linear maps from prompt embeddings to the p-model code (rows and body apart)."""

    def __init__(self, codec: ParamCodec, class_emb: Tensor, known: Tensor, alpha: float = 1.0):
        self.codec, self.class_emb, self.known, self.alpha = codec, class_emb, known, alpha
        self.row_map: Tensor | None = None
        self.body_map: Tensor | None = None

    @staticmethod
    def _design(x: Tensor) -> Tensor:
        return torch.cat([x, torch.ones(len(x), 1)], dim=1).double()

    def _solve(self, x: Tensor, y: Tensor) -> Tensor:
        a = self._design(x)
        reg = self.alpha * torch.eye(a.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0  # no penalty on the intercept
        return torch.linalg.solve(a.T @ a + reg, a.T @ y.double()).float()

    def fit(self, params: Tensor, classes: Tensor) -> Ridge:
        known = self.known[classes.clamp(min=0)] & (classes >= 0)
        code = self.codec.encode(params, self.codec.base(classes, known))
        rows = self.codec.spec.head_rows()
        mask = classes >= 0
        row_y = code[:, rows][mask]  # [N*k, row_len]
        row_x = self.class_emb[classes[mask]]
        self.row_map = self._solve(row_x, row_y)
        body = self._body_index()
        if len(body):
            self.body_map = self._solve(_prompt_vectors(classes, self.class_emb), code[:, body])
        return self

    def _body_index(self) -> Tensor:
        used = torch.zeros(self.codec.spec.num_params, dtype=torch.bool)
        used[self.codec.spec.head_rows().reshape(-1)] = True
        return (~used).nonzero().squeeze(1)

    def predict(self, classes: Tensor) -> Tensor:
        b, k = classes.shape
        mask = classes >= 0
        code = torch.zeros(b, self.codec.spec.num_params)
        rows = self.codec.spec.head_rows()
        row_x = self.class_emb[classes.clamp(min=0)].reshape(b * k, -1)
        pred_rows = (self._design(row_x).float() @ self.row_map).reshape(b, k, -1)
        code[:, rows.reshape(-1)] = pred_rows.reshape(b, -1)
        body = self._body_index()
        if self.body_map is not None:
            x = self._design(_prompt_vectors(classes, self.class_emb)).float()
            code[:, body] = x @ self.body_map
        known = self.known[classes.clamp(min=0)] & mask
        params = self.codec.decode(code, self.codec.base(classes, known))
        return zero_padding(params, mask, self.codec.spec)


# --------------------------------------------------------------------------- hypernetwork
def train_hypernetwork(
    tina: Tina,
    params: Tensor,
    classes: Tensor,
    class_emb: Tensor,
    *,
    steps: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> TinaTransformer:
    """Tina's architecture trained to map prompts straight to the code (MSE, no noise).

    It trains on ``device`` and comes back there; batches are drawn and grounded on the CPU and
    moved, so the draws do not depend on the device.

    Its prompts are class names on Tina's name grounding; like Tina's ``unknown`` prompts, a
    share :data:`UNKNOWN_SHARE` of the slots withhold their own row (the name mixture), so it
    learns to write rows of unseen classes."""
    cfg = tina.config
    g = torch.Generator().manual_seed(derive_seed(seed, "hypernetwork"))
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "hypernetwork-init"))
        model = TinaTransformer(
            layout_of(tina.spec),
            class_emb.shape[1],
            width=cfg.width,
            depth=cfg.depth,
            heads=cfg.heads,
            chunk_size=cfg.chunk_size,
            use_base=cfg.residual,
        ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_cfg = dataclasses.replace(cfg, steps=steps, prompt_dropout=0.0)
    ema = copy.deepcopy(model).requires_grad_(False)
    for step in progress(range(steps), desc="hypernetwork"):
        idx = torch.randint(len(params), (cfg.batch_size,), generator=g)
        cls, par, mask = augment_slots(classes[idx], params[idx], run_cfg, tina.spec, g)
        slots = name_slots(cls, class_emb)
        unknown = torch.rand(cls.shape, generator=g) < UNKNOWN_SHARE
        slots.kind = torch.where(unknown, UNKNOWN, NAME)
        base = tina.base(slots)
        target = tina.codec.encode(par, base)
        prompts = slots.prompts()
        zeros = torch.zeros_like(target)
        t = torch.zeros(len(idx), dtype=torch.long)
        base_in = base / tina.codec.std if cfg.residual else None
        inputs = (zeros, t, prompts, mask, base_in)
        pred = model(*(None if x is None else x.to(device) for x in inputs))
        target, weight = target.to(device), loss_weight(mask, tina.spec).to(device)
        loss = ((pred - target) ** 2 * weight).sum() / weight.sum()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, run_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        update_ema(ema, model, step, cfg.ema)
    log.info("hypernetwork: %d steps, final loss %.4f", steps, loss.item())
    return ema.eval()


@torch.no_grad()
def hypernetwork_predict(model: TinaTransformer, tina: Tina, classes: Tensor, class_emb: Tensor):
    mask = classes >= 0
    slots = name_slots(classes, class_emb)
    prompts, base = slots.prompts(), tina.base(slots)
    zeros = torch.zeros(len(classes), tina.spec.num_params)
    t = torch.zeros(len(classes), dtype=torch.long)
    base_in = base / tina.codec.std if tina.config.residual else None
    device = next(model.parameters()).device
    inputs = (zeros, t, prompts, mask, base_in)
    code = model(*(None if x is None else x.to(device) for x in inputs)).cpu()
    return zero_padding(tina.codec.decode(code, base), mask, tina.spec)
