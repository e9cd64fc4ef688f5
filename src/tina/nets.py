"""The small image classifiers that Tina generates, as flat parameter vectors.

Every net is ``conv3x3 -> maxpool2 -> ReLU -> conv3x3 -> maxpool2 -> ReLU -> global average
pool -> linear`` (padded convolutions; the pools give the 16x16 nets a 10x10 receptive field
before the average pool, which lifts accuracy well above strided variants). A net's parameters
live in one flat vector whose layout :class:`NetSpec` fixes: ``conv1.weight, conv1.bias,
conv2.weight, conv2.bias, head.weight [k, c2], head.bias [k]``; row ``j`` of the head (weight
row and bias) is the classifier of the task's ``j``-th class. A *head-only* spec holds only
``head.*``: its body is a frozen feature extractor (the generic model's body), given separately
as a flat body vector.

:func:`forward` runs ``T`` nets at once on ``T`` batches of images as one grouped convolution
(``groups=T``, channels-last), which keeps a CPU core busy where one tiny net would leave it
idle (less CPU time per net than one plain module at a time; ``torch.vmap`` over the nets
was slower than either). In channels-last layout oneDNN computes every group with the
same kernel whatever the number of groups, so on one thread and for ``T >= 2`` a net's outputs
and gradients are bit-identical whichever other nets share its batch (``T = 1`` takes another
code path; on several threads, odd and even ``T`` split the work differently).

:func:`score` measures many nets at once, each on the test images of its own task.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tina.data import to_float
from tina.tasks import task_classes

ARCHS: dict[str, tuple[int, int]] = {
    "cnn5k": (16, 32),
    "cnn10k": (22, 44),
    "cnn33k": (42, 84),
    "cnn76k": (64, 128),
}
"""Conv channels ``(c1, c2)`` per architecture; with k=10 classes the nets have 5,418, 9,822,
33,862 and 76,938 parameters."""

IN_CHANNELS = 3
PARAM_NAMES = (
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "head.weight",
    "head.bias",
)
_BASE_NDIM = {"conv1.weight": 4, "conv2.weight": 4, "head.weight": 2}


@dataclass(frozen=True)
class NetSpec:
    """Architecture, number of classes (head rows) and whether only the head is generated."""

    arch: str
    num_classes: int
    head_only: bool = False

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown net arch {self.arch!r}; choose one of {sorted(ARCHS)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    @property
    def channels(self) -> tuple[int, int]:
        return ARCHS[self.arch]

    @property
    def feature_dim(self) -> int:
        """Width ``c2`` of the pooled features that the head reads."""
        return self.channels[1]

    def body_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the body parameters (the convolutions), in flat order."""
        c1, c2 = self.channels
        return [
            ("conv1.weight", (c1, IN_CHANNELS, 3, 3)),
            ("conv1.bias", (c1,)),
            ("conv2.weight", (c2, c1, 3, 3)),
            ("conv2.bias", (c2,)),
        ]

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of the generated parameters, in flat order."""
        head = [
            ("head.weight", (self.num_classes, self.feature_dim)),
            ("head.bias", (self.num_classes,)),
        ]
        return head if self.head_only else self.body_shapes() + head

    @property
    def body_size(self) -> int:
        """Number of body parameters (also for a head-only spec, whose body is given apart)."""
        return sum(math.prod(shape) for _, shape in self.body_shapes())

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.param_shapes())

    @property
    def head_offset(self) -> int:
        """Flat index of ``head.weight[0, 0]``."""
        return 0 if self.head_only else self.body_size

    def head_rows(self) -> Tensor:
        """Flat indices ``[k, c2 + 1]``: slot ``j``'s head weight row, then its bias."""
        k, c2 = self.num_classes, self.feature_dim
        weight = self.head_offset + torch.arange(k * c2).reshape(k, c2)
        bias = self.head_offset + k * c2 + torch.arange(k).unsqueeze(1)
        return torch.cat([weight, bias], dim=1)

    def with_classes(self, num_classes: int, head_only: bool | None = None) -> NetSpec:
        """The same architecture with another number of head rows (and head-only flag)."""
        head_only = self.head_only if head_only is None else head_only
        return NetSpec(self.arch, num_classes, head_only)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> NetSpec:
        fields = json.loads(text) if isinstance(text, str) else dict(text)
        return cls(str(fields["arch"]), int(fields["num_classes"]), bool(fields["head_only"]))


def flatten(params: dict[str, Tensor]) -> Tensor:
    """Concatenate named parameters (optionally with equal leading dims) in flat order."""
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"unknown parameter names {unknown}; expected some of {PARAM_NAMES}")
    parts = []
    for name in PARAM_NAMES:
        if name in params:
            value = params[name]
            lead = value.shape[: value.ndim - _BASE_NDIM.get(name, 1)]
            parts.append(value.reshape(*lead, -1))
    return torch.cat(parts, dim=-1)


def unflatten(flat: Tensor, spec: NetSpec) -> dict[str, Tensor]:
    """Views of ``flat [..., P]`` as named parameters; leading dims are kept."""
    if flat.shape[-1] != spec.num_params:
        raise ValueError(
            f"flat vector has {flat.shape[-1]} entries but {spec} needs {spec.num_params}"
        )
    return _named_views(flat, spec.param_shapes())


def _named_views(flat: Tensor, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, Tensor]:
    lead, out, start = flat.shape[:-1], {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        out[name] = flat[..., start : start + size].reshape(*lead, *shape)
        start += size
    return out


def split_body(flat: Tensor, spec: NetSpec) -> tuple[Tensor, Tensor]:
    """Split a full net's ``flat [..., P]`` into its body and head vectors."""
    if spec.head_only:
        raise ValueError("split_body needs a full (not head-only) spec")
    return flat[..., : spec.body_size], flat[..., spec.body_size :]


def permute_classes(flat: Tensor, perm: Tensor, spec: NetSpec) -> Tensor:
    """Reorder head rows: slot ``j`` of the result is slot ``perm[j]`` of ``flat [..., P]``."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    if sorted(perm.tolist()) != list(range(spec.num_classes)):
        raise ValueError(f"perm must be a permutation of 0..{spec.num_classes - 1}, got {perm}")
    rows = spec.head_rows()
    index = torch.arange(spec.num_params)
    index[rows.reshape(-1)] = rows[perm].reshape(-1)
    return flat[..., index]


def init_params(spec: NetSpec, generator: torch.Generator) -> Tensor:
    """A seeded initial flat vector (PyTorch's default uniform fan-in init for every layer)."""
    fan_in = {
        "conv1": IN_CHANNELS * 9,
        "conv2": spec.channels[0] * 9,
        "head": spec.feature_dim,
    }
    parts = []
    for name, shape in spec.param_shapes():
        # kaiming_uniform(a=sqrt(5)) for weights and the bias rule both give 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(fan_in[name.split(".")[0]])
        parts.append((torch.rand(math.prod(shape), generator=generator) * 2 - 1) * bound)
    return torch.cat(parts)


def init_head_rows(n: int, spec: NetSpec, generator: torch.Generator) -> Tensor:
    """``n`` seeded head rows ``[n, c2 + 1]`` (weights and bias) drawn like :func:`init_params`."""
    bound = 1.0 / math.sqrt(spec.feature_dim)
    return (torch.rand(n, spec.feature_dim + 1, generator=generator) * 2 - 1) * bound


def _block(x: Tensor, weight: Tensor, bias: Tensor, groups: int = 1) -> Tensor:
    """Padded 3x3 convolution, 2x2 max pool, ReLU (pooling first touches 4x less memory)."""
    return F.max_pool2d(F.conv2d(x, weight, bias, padding=1, groups=groups), 2).relu()


def _conv_body(body: dict[str, Tensor], images: Tensor) -> Tensor:
    """Pooled features ``[T, B, c2]`` of ``T`` bodies on ``images [T, B, 3, H, W]``."""
    nets, batch = images.shape[:2]
    c1, c2 = body["conv1.weight"].shape[1], body["conv2.weight"].shape[1]
    x = images.transpose(0, 1).reshape(batch, nets * IN_CHANNELS, *images.shape[-2:])
    x = x.contiguous(memory_format=torch.channels_last)
    weight1 = body["conv1.weight"].reshape(nets * c1, IN_CHANNELS, 3, 3)
    x = _block(x, weight1, body["conv1.bias"].reshape(-1), groups=nets)
    weight2 = body["conv2.weight"].reshape(nets * c2, c1, 3, 3)
    x = _block(x, weight2, body["conv2.bias"].reshape(-1), groups=nets)
    return x.mean(dim=(2, 3)).reshape(batch, nets, c2).transpose(0, 1)


def _head(head: dict[str, Tensor], feats: Tensor) -> Tensor:
    """Logits ``[T, B, k]`` from features ``[T, B, c2]`` and ``T`` heads."""
    return torch.baddbmm(head["head.bias"].unsqueeze(1), feats, head["head.weight"].transpose(1, 2))


def features(flat_body: Tensor, images: Tensor, spec: NetSpec) -> Tensor:
    """Pooled features ``[N, c2]`` of one body ``[P_body]`` on ``images [N, 3, H, W]``."""
    if flat_body.shape != (spec.body_size,):
        raise ValueError(f"body vector must have shape ({spec.body_size},), got {flat_body.shape}")
    body = _named_views(flat_body, spec.body_shapes())
    x = images.contiguous(memory_format=torch.channels_last)
    x = _block(x, body["conv1.weight"], body["conv1.bias"])
    x = _block(x, body["conv2.weight"], body["conv2.bias"])
    return x.mean(dim=(2, 3))


def forward(flat: Tensor, images: Tensor, spec: NetSpec, body: Tensor | None = None) -> Tensor:
    """Logits ``[T, B, k]`` of ``T`` nets ``flat [T, P]`` on their images ``[T, B, 3, H, W]``.

    Full nets run as grouped convolutions. Head-only nets need ``body`` (a flat body vector
    ``[P_body]``), which is applied once to all ``T * B`` images. On one thread, outputs and
    gradients of one net do not depend on the other nets for ``T >= 2`` (module docstring).
    """
    if flat.ndim != 2 or images.ndim != 5 or images.shape[0] != flat.shape[0]:
        raise ValueError(
            f"forward needs flat [T, P] and images [T, B, 3, H, W] with the same T; got "
            f"{tuple(flat.shape)} and {tuple(images.shape)}"
        )
    params = unflatten(flat, spec)
    if spec.head_only:
        if body is None:
            raise ValueError("a head-only spec needs body= (the frozen generic body vector)")
        feats = features(body, images.flatten(0, 1), spec).reshape(*images.shape[:2], -1)
    else:
        if body is not None:
            raise ValueError("body= is only for head-only specs; this spec generates the body")
        feats = _conv_body(params, images)
    return _head(params, feats)


def spec_of_generic(generic_flat: Tensor, spec: NetSpec) -> NetSpec:
    """The full spec (head over all classes) of a generic vector of ``spec``'s architecture."""
    base = spec.with_classes(1, head_only=False)
    rows, rest = divmod(generic_flat.numel() - base.body_size, spec.feature_dim + 1)
    if rest or rows < 1:
        raise ValueError(
            f"generic vector of {generic_flat.numel()} entries does not fit arch {spec.arch}"
        )
    return spec.with_classes(rows, head_only=False)


# --------------------------------------------------------------------------- scoring
def slot_index(labels: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the items whose label is one of ``classes`` and their slot in ``classes``."""
    valid = classes[classes >= 0]
    slot_of = torch.full((int(max(labels.max(), valid.max())) + 1,), -1, dtype=torch.long)
    slot_of[valid] = torch.nonzero(classes >= 0).squeeze(1)
    slots = slot_of[labels]
    index = torch.nonzero(slots >= 0).squeeze(1)
    return index, slots[index]


def mask_padding(logits: Tensor, classes: Tensor) -> Tensor:
    """Padding slots can never be predicted: their logits become -inf."""
    return logits.masked_fill((classes < 0).unsqueeze(1), float("-inf"))


def shared_body(flat: Tensor, spec: NetSpec) -> Tensor | None:
    """The body ``[P_body]`` that every net of ``flat [T, P]`` has, or None where they differ
    (nets that are the generic body under their own head rows: selection, imprinting)."""
    if spec.head_only:
        return None
    bodies = flat[:, : spec.body_size]
    return bodies[0] if bool((bodies == bodies[0]).all()) else None


@torch.no_grad()
def task_accuracy(
    flat: Tensor,
    classes: Tensor,
    images: Tensor,
    labels: Tensor,
    spec: NetSpec,
    body: Tensor | None,
    nets_per_pass: int = 16,
    images_per_pass: int = 128,
) -> Tensor:
    """Accuracy ``[T]`` of nets ``flat [T, P]`` on the images of their tasks ``classes [T, k]``.

    Nets with one body (head-only nets on ``body``, or full nets that share theirs) compute
    each image's features once, however many tasks score it; other nets run as a batch. The
    nets run on the device of ``flat`` (``images`` may stay on the CPU: each pass moves its
    batch); the accuracies come back on the CPU.
    """
    device = flat.device
    body = shared_body(flat, spec) if body is None else body.to(device)
    plans = [slot_index(labels, ids) for ids in classes]
    longest = max(len(index) for index, _ in plans)
    if min(len(index) for index, _ in plans) == 0:
        raise ValueError("a task has no test images")
    # pad every task to the same count by repeating its first item; padded items are not scored
    index = torch.stack([torch.cat([i, i[:1].expand(longest - len(i))]) for i, _ in plans])
    slots = torch.stack([torch.cat([s, s[:1].expand(longest - len(s))]) for _, s in plans])
    counted = torch.arange(longest) < torch.tensor([len(i) for i, _ in plans]).unsqueeze(1)
    if body is not None:
        logits = _shared_body_logits(flat, body, images, index, spec)
        hits = (mask_padding(logits, classes.to(device)).argmax(-1).cpu() == slots) & counted
        return hits.sum(dim=1) / counted.sum(dim=1)
    correct = torch.zeros(len(classes))
    for t in range(0, len(classes), nets_per_pass):
        nets = slice(t, t + nets_per_pass)
        for b in range(0, longest, images_per_pass):
            items = slice(b, b + images_per_pass)
            batch = images[index[nets, items].reshape(-1)]
            batch = batch.reshape(*index[nets, items].shape, *images.shape[1:]).to(device)
            logits = forward(flat[nets], batch, spec, body=body)
            logits = mask_padding(logits, classes[nets].to(device))
            hits = (logits.argmax(-1).cpu() == slots[nets, items]) & counted[nets, items]
            correct[nets] += hits.sum(dim=1)
    return correct / counted.sum(dim=1)


def _shared_body_logits(
    flat: Tensor, body: Tensor, images: Tensor, index: Tensor, spec: NetSpec, chunk: int = 2048
) -> Tensor:
    """Logits ``[T, N, k]`` of the heads of ``flat [T, P]`` on the features that ``body``
    gives the images ``index [T, N]``, each distinct image's features computed once."""
    used, where = index.unique(return_inverse=True)
    head_spec = spec.with_classes(spec.num_classes, head_only=True)
    feats = torch.cat([
        features(body, images[part].to(flat.device), head_spec) for part in used.split(chunk)
    ])  # fmt: skip
    head = unflatten(flat[:, spec.head_offset :], head_spec)
    return _head(head, feats[where.to(flat.device)])


def score(
    params: Tensor,
    tasks: pd.DataFrame,
    images: Tensor,
    labels: Tensor,
    spec: NetSpec,
    body: Tensor | None = None,
) -> Tensor:
    """Accuracy ``[T]`` of nets ``params [T, P]`` on the images of their tasks (batched).

    Labels map to slots in prompt order; padding slots are never predicted. Head-only specs
    need ``body`` (the generic body vector).
    """
    if params.shape != (len(tasks), spec.num_params):
        raise ValueError(
            f"params must be [{len(tasks)}, {spec.num_params}] for {len(tasks)} tasks and {spec}, "
            f"got {tuple(params.shape)}"
        )
    classes = task_classes(tasks, spec.num_classes)
    return task_accuracy(params.float(), classes, to_float(images), labels, spec, body)


class CNN(nn.Module):
    """One net of a spec, as a plain module with the flat layout's parameter names."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        if spec.head_only:
            raise ValueError("CNN is a whole net; build it from a full (not head-only) spec")
        self.spec = spec
        c1, c2 = spec.channels
        self.conv1 = nn.Conv2d(IN_CHANNELS, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.head = nn.Linear(c2, spec.num_classes)

    def features(self, images: Tensor) -> Tensor:
        x = images.contiguous(memory_format=torch.channels_last)
        x = _block(x, self.conv1.weight, self.conv1.bias)
        x = _block(x, self.conv2.weight, self.conv2.bias)
        return x.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    def to_flat(self) -> Tensor:
        return flatten({name: p.detach() for name, p in self.named_parameters()})

    @classmethod
    def from_flat(cls, flat: Tensor, spec: NetSpec) -> CNN:
        net = cls(spec)
        net.load_state_dict({name: value.clone() for name, value in unflatten(flat, spec).items()})
        return net
