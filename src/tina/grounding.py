"""Grounding: the base head row of every prompt slot, from what the slot says.

Tina writes a net as a residual over a *base*: the generic body plus one head row per slot.
The base row is where the prompt's meaning enters the net before Tina adds anything:

- a **known class name**: the class's own generic row (classifier selection);
- an **unknown name** (a class the generic model never trained, or one Tina is taught to treat
  so): the known rows mixed by the name's text similarity to the known class names;
- a **description**: the known rows mixed by the description's similarity to the known names;
- **images** (k shots of the class): the imprinted row, the normalised mean of the shots'
  generic features; when the slot also names a known class (images with names) and
  ``keep_known_rows`` is on, its selection row. With ``fit_steps`` the imprinted rows are then
  fitted on the shots against the task's frozen rows (a few steps of cross-entropy).

:func:`ground` maps a :class:`Slots` batch to rows ``[B, k, F + 1]``; the same function serves
Tina's training draws, the evaluation and ``tina generate``. The temperatures, the imprint
scale and the fitting steps are chosen on validation tasks (:mod:`tina.grounding_choice`) and
stored with the run.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tina.data import to_float
from tina.io import write_json
from tina.nets import NetSpec, features, split_body
from tina.seeding import derive_seed
from tina.tasks import PAD

log = logging.getLogger("tina.grounding")

NAME, UNKNOWN, DESCRIPTION, IMAGES = 0, 1, 2, 3
"""Slot kinds: a class name (its selection row if known, else the name mixture), a name whose
own row is withheld (the name mixture), a description (the description mixture), images (the
imprinted row, or the selection row of a known class the slot also names)."""


@dataclass(frozen=True)
class GroundingSettings:
    """The grounding's free choices; all but ``fit_lr`` and ``keep_known_rows`` are picked on
    validation tasks (:func:`tina.grounding_choice.choose_settings`)."""

    name_temperature: float = 0.05  # softmax temperature of the name mixture (cosine / T)
    description_temperature: float = 0.05
    imprint_scale: float = 0.1  # an imprinted row's norm over the known rows' mean norm
    fit_steps: int = 0  # > 0: fit the imprinted rows on the shots against the frozen rows
    fit_lr: float = 0.05
    keep_known_rows: bool = True  # images of a named known class keep its selection row

    @classmethod
    def from_dict(cls, values: dict) -> GroundingSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Slots:
    """A batch of prompts, slot by slot: what each of ``k`` slots of ``B`` tasks says.

    ``kind [B, k]`` (:data:`NAME` ... :data:`IMAGES`), ``class_id [B, k]`` (the data set's class
    a slot names, PAD when none: a padding slot, a new name, unnamed images), ``text [B, k, D]``
    (the name or description embedding of text slots), ``image [B, k, D]`` (the image prompt of
    image slots: their shots' embeddings averaged and scaled to unit length), ``shot_features
    [B, k, n, F]`` with ``shot_count [B, k]`` (the generic features of each image slot's shots,
    zero-padded) and ``mask [B, k]`` (real slots).
    """

    kind: Tensor
    class_id: Tensor
    mask: Tensor
    text: Tensor | None = None
    image: Tensor | None = None
    shot_features: Tensor | None = None
    shot_count: Tensor | None = None

    def prompts(self) -> Tensor:
        """What Tina reads, ``[B, k, D]``: each slot's image prompt or text embedding (zero on
        padding)."""
        parts = [x for x in (self.text, self.image) if x is not None]
        if not parts:
            raise ValueError("slots without text or image embeddings have no prompt")
        out = torch.zeros_like(parts[0], dtype=torch.float32)
        if self.text is not None:
            out = torch.where((self.kind != IMAGES).unsqueeze(-1), self.text.float(), out)
        if self.image is not None:
            out = torch.where((self.kind == IMAGES).unsqueeze(-1), self.image.float(), out)
        elif (self.kind == IMAGES).any():
            raise ValueError("image slots need their image prompts (Slots.image)")
        return out * self.mask.unsqueeze(-1)

    def map(self, fn) -> Slots:
        """The slots with ``fn`` applied to every tensor."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Slots(**{name: None if x is None else fn(x) for name, x in values.items()})

    def to(self, device) -> Slots:
        return self.map(lambda x: x.to(device))

    def repeat(self, samples: int) -> Slots:
        """Every task repeated ``samples`` times in a row (task-major)."""
        return self.map(lambda x: x.repeat_interleave(samples, 0))

    def __getitem__(self, index) -> Slots:
        """The slots of the tasks at ``index``."""
        return self.map(lambda x: x[index])


class Grounding:
    """The generic model's rows and names, and the :class:`GroundingSettings` that ground slots."""

    def __init__(
        self,
        generic: Tensor,
        spec_all: NetSpec,
        known: Tensor,
        name_emb: Tensor,
        feature_mean: Tensor,
        settings: GroundingSettings | None = None,
    ):
        self.spec_all = spec_all
        self.body = split_body(generic, spec_all)[0]
        self.rows = generic[spec_all.head_rows()]  # [C, F + 1]
        self.known = known.bool()
        self.known_ids = torch.nonzero(self.known).squeeze(1)
        if len(self.known_ids) == 0:
            raise ValueError("the generic model knows no class: nothing to ground prompts on")
        self.name_emb = name_emb.float()  # [C, D]: every class name's embedding
        self.keys = F.normalize(self.name_emb[self.known_ids], dim=-1)  # [K, D]
        self.known_rows = self.rows[self.known_ids]  # [K, F + 1]
        self.row_norm = float(self.known_rows[:, :-1].norm(dim=1).mean())
        self.mean_bias = float(self.known_rows[:, -1].mean())
        self.feature_mean = feature_mean.float()
        self.settings = settings or GroundingSettings()

    def with_settings(self, **changes) -> Grounding:
        """The same grounding with some settings changed."""
        out = Grounding.__new__(Grounding)
        out.__dict__.update(self.__dict__)
        out.settings = replace(self.settings, **changes)
        return out

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def features(self, images_uint8: Tensor) -> Tensor:
        """Pooled generic features ``[N, F]`` of uint8 images (in chunks)."""
        out = [
            features(self.body, to_float(images_uint8[i : i + 4096]), self.spec_all)
            for i in range(0, len(images_uint8), 4096)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.spec_all.feature_dim)

    def mixture(self, query: Tensor, temperature: float, exclude: Tensor | None = None) -> Tensor:
        """Rows ``[..., F + 1]``: the known rows mixed by the softmax of the cosine between
        ``query [..., D]`` and the known names over ``temperature``; a query's own class
        (``exclude [...]``, PAD for none) is left out of its mix."""
        sims = F.normalize(query.float(), dim=-1) @ self.keys.T / temperature
        if exclude is not None:
            own = exclude.unsqueeze(-1) == self.known_ids
            sims = sims.masked_fill(own, float("-inf"))
        return sims.softmax(-1) @ self.known_rows

    def imprint(self, mean_features: Tensor) -> Tensor:
        """Rows ``[..., F + 1]`` from mean shot features ``[..., F]``: the normalised mean, of
        norm ``imprint_scale`` times the known rows' mean norm, with a bias that centres its
        logit on the mean training feature (``feature_mean``) at the known rows' mean bias, so
        imprinted rows compete with trained ones on their scale."""
        scale = self.settings.imprint_scale * self.row_norm
        weight = scale * F.normalize(mean_features.float(), dim=-1)
        bias = self.mean_bias - weight @ self.feature_mean
        return torch.cat([weight, bias.unsqueeze(-1)], dim=-1)

    def fit(self, rows: Tensor, trainable: Tensor, slots: Slots) -> Tensor:
        """The ``trainable [B, k]`` rows fitted on their tasks' shots against the frozen rows
        (:func:`fit_rows`, ``fit_steps`` of Adam at ``fit_lr``); unchanged when ``fit_steps``
        is 0."""
        s = self.settings
        if s.fit_steps <= 0 or not trainable.any() or slots.shot_features is None:
            return rows
        return fit_rows(rows, trainable, slots, steps=s.fit_steps, lr=s.fit_lr, l2=1e-3)

    # ------------------------------------------------------------------ the one route
    def ground(self, slots: Slots) -> Tensor:
        """Base rows ``[B, k, F + 1]`` of every slot (padding slots: zeros)."""
        s = self.settings
        kind, cid = slots.kind, slots.class_id
        b, k = kind.shape
        out = torch.zeros(b, k, self.rows.shape[1])
        named = cid >= 0
        is_known = named & self.known[cid.clamp(min=0)]
        own_row = self.rows[cid.clamp(min=0)]
        exclude = torch.where(named, cid, torch.full_like(cid, PAD))

        select = is_known & (kind == NAME)
        if s.keep_known_rows:
            select |= is_known & (kind == IMAGES)
        out = torch.where(select.unsqueeze(-1), own_row, out)

        by_name = ((kind == NAME) & ~is_known) | (kind == UNKNOWN)
        if by_name.any():
            if slots.text is None:
                raise ValueError("name slots need their text embeddings (Slots.text)")
            mixed = self.mixture(slots.text, s.name_temperature, exclude)
            out = torch.where(by_name.unsqueeze(-1), mixed, out)
        described = kind == DESCRIPTION
        if described.any():
            if slots.text is None:
                raise ValueError("description slots need their text embeddings (Slots.text)")
            mixed = self.mixture(slots.text, s.description_temperature)
            out = torch.where(described.unsqueeze(-1), mixed, out)
        imprinted = (kind == IMAGES) & ~select
        if imprinted.any():
            if slots.shot_features is None:
                raise ValueError("image slots need their shots' features (Slots.shot_features)")
            n = slots.shot_count.clamp(min=1).unsqueeze(-1).float()
            mean = slots.shot_features.float().sum(2) / n
            out = torch.where(imprinted.unsqueeze(-1), self.imprint(mean), out)
            out = self.fit(out, imprinted & slots.mask, slots)
        return out * slots.mask.unsqueeze(-1)


# --------------------------------------------------------------------------- fitting rows
def fit_rows(
    rows: Tensor, trainable: Tensor, slots: Slots, *, steps: int, lr: float, l2: float
) -> Tensor:
    """Head rows ``[B, k, F + 1]`` with the ``trainable [B, k]`` ones fitted on the tasks' shots.

    The loss is the cross-entropy of each task's head (its real slots) on the generic features
    of all its shots (``slots.shot_features``, labelled by slot), plus ``l2`` times the mean
    squared change of a trainable row from where it started; ``steps`` of Adam at ``lr``. The
    other rows stay frozen. Batched over tasks.

    The problem is tiny (a linear head on a few features), so autograd's bookkeeping would
    cost more than the arithmetic: the gradient is written out (softmax minus one-hot, times
    the features) and Adam is applied by hand, as ``torch.optim.Adam`` with its defaults."""
    feats, count = slots.shot_features.float(), slots.shot_count
    b, k, n, f = feats.shape
    valid = (torch.arange(n) < count.unsqueeze(-1)) & slots.mask.unsqueeze(-1)  # [B, k, n]
    x = torch.cat([feats.reshape(b, k * n, f), torch.ones(b, k * n, 1)], dim=-1)  # with bias
    weight = valid.reshape(b, k * n, 1).float() / valid.sum().clamp(min=1)
    onehot = F.one_hot(torch.arange(k).repeat_interleave(n), k).float()  # [k * n, k]
    closed = ~slots.mask.unsqueeze(1)  # [B, 1, k]: padding slots are no class
    start = rows.detach().float()
    grad_mask = trainable.unsqueeze(-1).float()
    pull = 2 * l2 / grad_mask.sum().clamp(min=1)  # gradient of the penalty per unit of change
    delta, first, second = (torch.zeros_like(start) for _ in range(3))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        current = start + delta * grad_mask
        logits = torch.bmm(x, current.transpose(1, 2)).masked_fill(closed, float("-inf"))
        d_logits = torch.where(weight > 0, (logits.softmax(-1) - onehot) * weight, 0.0)
        grad = (torch.bmm(d_logits.transpose(1, 2), x) + pull * delta) * grad_mask
        first.lerp_(grad, 1 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (second / (1 - beta2**step)).sqrt_().add_(eps)
        delta.addcdiv_(first, denom, value=-lr / (1 - beta1**step))
    return (start + delta * grad_mask).to(rows.dtype)


# --------------------------------------------------------------------------- shots
def draw_shots(labels: Tensor, classes: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Indices ``[B, k, shots]`` of ``shots`` distinct images (without replacement where the
    class has enough) of each slot's class among ``labels``; padding slots get index 0."""
    out = torch.zeros(*classes.shape, shots, dtype=torch.long)
    for (t, j), c in zip(torch.cartesian_prod(*map(torch.arange, classes.shape)).tolist(),
                         classes.reshape(-1).tolist(), strict=True):  # fmt: skip
        if c < 0:
            continue
        pool = torch.nonzero(labels == c).squeeze(1)
        if len(pool) == 0:
            raise ValueError(f"class {c} has no image to draw shots from")
        order = torch.randperm(len(pool), generator=generator)
        out[t, j] = pool[order.repeat(math.ceil(shots / len(pool)))[:shots]]
    return out


def task_shots(
    task_ids: Sequence[int], classes: Tensor, labels: Tensor, shots: int, seed: int, stream: str
) -> Tensor:
    """Indices ``[T, k, shots]`` of each slot's shots, seeded by ``(seed, stream, task, class)``
    so that fewer shots are a prefix of more (the evaluation's and validation's draw)."""
    out = torch.zeros(*classes.shape, shots, dtype=torch.long)
    for t, task_id in enumerate(task_ids):
        for j, class_id in enumerate(classes[t].tolist()):
            if class_id < 0:
                continue
            pool = torch.nonzero(labels == class_id).squeeze(1)
            if len(pool) < shots:
                raise ValueError(
                    f"class {class_id} has {len(pool)} training images but {shots} shots are "
                    "asked for; lower evaluate.shots"
                )
            g = torch.Generator().manual_seed(derive_seed(seed, stream, task_id, class_id))
            out[t, j] = pool[torch.randperm(len(pool), generator=g)[:shots]]
    return out


def image_slots(
    classes: Tensor,
    shot_index: Tensor,
    feature_bank: Tensor,
    prompt_bank: Tensor | None = None,
    *,
    named: bool,
    count: Tensor | None = None,
    mask: Tensor | None = None,
) -> Slots:
    """Image slots of tasks ``classes [B, k]`` whose shots are ``shot_index [B, k, n]`` into
    ``feature_bank [N, F]`` (generic features) and ``prompt_bank [N, D]`` (per-image prompt
    embeddings; None: slots for the base alone). ``count [B, k]`` says how many of a slot's
    ``n`` indices are shots (default all); ``named`` gives each slot its class id (images with
    names). A slot's image prompt is the mean of its shots' embeddings, scaled to unit length.
    ``mask [B, k]`` marks the real slots (default: those whose class is known, ``classes >=
    0``; a prompt of new classes gives its own).
    """
    mask = classes >= 0 if mask is None else mask
    n = shot_index.shape[-1]
    count = torch.full_like(classes, n) if count is None else count
    count = count * mask
    valid = (torch.arange(n) < count.unsqueeze(-1)).unsqueeze(-1)  # [B, k, n, 1]
    image = None
    if prompt_bank is not None:
        image = F.normalize((prompt_bank[shot_index].float() * valid).sum(2), dim=-1)
    return Slots(
        kind=torch.full_like(classes, IMAGES),
        class_id=classes if named else torch.full_like(classes, PAD),
        mask=mask,
        image=image,
        shot_features=feature_bank[shot_index] * valid,
        shot_count=count,
    )


def text_slots(classes: Tensor, emb: Tensor, kind: int, *, named: bool = True) -> Slots:
    """Text slots (``kind`` NAME, UNKNOWN or DESCRIPTION) of tasks ``classes [B, k]`` whose
    texts are the rows of ``emb [C, D]``."""
    mask = classes >= 0
    return Slots(
        kind=torch.full_like(classes, kind),
        class_id=classes if named else torch.full_like(classes, PAD),
        mask=mask,
        text=emb[classes.clamp(min=0)] * mask.unsqueeze(-1),
    )


def build_grounding(
    generic: Tensor,
    spec_all: NetSpec,
    known: Tensor,
    name_emb: Tensor,
    train_images: Tensor,
    train_labels: Tensor,
    settings: GroundingSettings | None = None,
) -> tuple[Grounding, Tensor]:
    """The grounding of a run and the generic features ``[N, F]`` of its training images
    (their mean over the known classes' images centres the imprinted rows)."""
    dim = spec_all.feature_dim
    grounding = Grounding(generic, spec_all, known, name_emb, torch.zeros(dim), settings)
    feats = grounding.features(train_images)
    seen = grounding.known[train_labels]
    if not seen.any():
        raise ValueError("no training image belongs to a known class: nothing to imprint from")
    grounding.feature_mean = feats[seen].mean(0)
    return grounding, feats


def save_settings(settings: GroundingSettings, path: str | Path) -> None:
    write_json(path, settings.to_dict())


def load_settings(path: str | Path) -> GroundingSettings:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing grounding settings file: {path}")
    return GroundingSettings.from_dict(json.loads(path.read_text()))
