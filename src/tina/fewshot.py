"""Few-shot baselines of image prompts: what a user could do with the shots and no Tina.

- *logistic head*: a head trained from zero on the shots' generic features (the generic body
  frozen), with an L2 penalty (its weight is chosen on validation tasks);
- *fine-tuning on the shots*: the whole net, started from the grounded base of the prompt
  (imprinted rows, selection rows for named known classes), trained on the shots themselves
  (its learning rate is chosen on validation tasks).

The imprinted bases themselves (``imprint``, ``imprint + selection``) are
:meth:`tina.grounding.Grounding.ground` of image slots. Every choice here is made by
:func:`choose` on validation tasks, whose shots come from the training images and whose scores
from the validation images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tina.data import to_float
from tina.grounding import Slots, fit_rows
from tina.nets import NetSpec, forward
from tina.seeding import derive_seed
from tina.zoo.finetune import augment, draw_augment

log = logging.getLogger("tina.fewshot")

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
"""Candidate L2 weights of the logistic head."""
LR_GRID = (1e-4, 3e-4, 1e-3)
"""Candidate learning rates of fine-tuning on the shots."""
HEAD_STEPS, HEAD_LR = 100, 0.05
FINETUNE_STEPS = 30


def logistic_head(slots: Slots, *, l2: float, steps: int = HEAD_STEPS, lr: float = HEAD_LR):
    """Head rows ``[B, k, F + 1]`` trained from zero on the shots' generic features."""
    b, k = slots.mask.shape
    rows = torch.zeros(b, k, slots.shot_features.shape[-1] + 1)
    return fit_rows(rows, slots.mask, slots, steps=steps, lr=lr, l2=l2)


def finetune_on_shots(
    params: Tensor,
    spec: NetSpec,
    images: Tensor,
    shot_index: Tensor,
    mask: Tensor,
    *,
    lr: float,
    steps: int = FINETUNE_STEPS,
    augment_mode: str = "none",
    seed: int = 0,
    body: Tensor | None = None,
) -> Tensor:
    """Nets ``params [T, P]`` fine-tuned on their shots: every step one full batch of the
    ``shot_index [T, k, n]`` images (uint8 ``images``) of the real slots (``mask [T, k]``),
    augmented afresh (``augment_mode``, a mode of :func:`tina.zoo.finetune.augment`; ``color``
    only where colour is no class cue), cross-entropy over the task's slots, Adam at ``lr``.
    Head-only nets (``spec.head_only``) run on the frozen generic ``body``."""
    t, k, n = shot_index.shape
    x = to_float(images[shot_index.reshape(-1)])  # [T * k * n, 3, H, W]
    target = torch.arange(k).repeat_interleave(n).expand(t, -1)
    keep = mask.repeat_interleave(n, dim=1)  # [T, k * n]
    flat = params.detach().clone().float().requires_grad_()
    optimizer = torch.optim.Adam([flat], lr=lr)
    generator = torch.Generator().manual_seed(derive_seed(seed, "finetune-shots"))
    with torch.enable_grad():
        for _ in range(steps):
            draws = draw_augment((len(x),), generator)
            batch = augment(x, draws, augment_mode).reshape(t, k * n, *x.shape[1:])
            logits = forward(flat, batch, spec, body=body)
            logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
            ce = F.cross_entropy(logits.reshape(-1, k), target.reshape(-1), reduction="none")
            ce = torch.where(keep.reshape(-1), ce, 0.0)
            loss = ce.sum() / keep.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return flat.detach()


def choose(
    candidates: Sequence[float], accuracy: Callable[[float], float], what: str
) -> tuple[float, dict[float, float]]:
    """The candidate with the best ``accuracy(candidate)`` (on validation tasks; the first of
    equals) and every candidate's accuracy."""
    scores = {value: float(accuracy(value)) for value in candidates}
    best = max(scores, key=scores.get)
    log.info("%s chosen on validation tasks: %s (%s)", what, best, scores)
    return best, scores
