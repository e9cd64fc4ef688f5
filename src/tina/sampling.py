"""A trained Tina and what it generates with: its config, the sampler and its checkpoint files.

Inference (evaluation, generation, the command line) needs only this module and
:mod:`tina.codec`; training is :mod:`tina.train`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from tina.codec import ParamCodec, layout_of
from tina.diffusion import Schedule, ddim_sample, ddpm_sample, guided
from tina.grounding import NAME, Grounding, GroundingSettings, Slots, text_slots
from tina.io import load_tensors, save_tensors
from tina.model import TinaTransformer
from tina.nets import NetSpec

PROMPT_KINDS = ("names", "descriptions", "images", "unknown")
"""The kinds of prompt Tina trains on (:func:`tina.train_data.draw_prompts`)."""
DEFAULT_PROMPT_KINDS = {"names": 0.4, "descriptions": 0.2, "images": 0.2, "unknown": 0.2}


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
    prompt_kinds: dict = field(default_factory=lambda: dict(DEFAULT_PROMPT_KINDS))
    unknown_share: float = 0.5
    image_names: float = 0.5
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
    grounding: Grounding  # every prompt slot's base row (tina.grounding)

    def generate(
        self,
        slots: Slots,
        *,
        samples: int = 1,
        sampler: str = "ddim",
        steps: int | None = None,
        seed: int = 0,
        guidance: float | None = None,
    ) -> Tensor:
        """Parameters ``[B * samples, P]`` (task-major) of nets for the prompts ``slots``
        (:class:`tina.grounding.Slots`, ``B`` tasks of ``k`` slots).

        Each slot's base row comes from :meth:`tina.grounding.Grounding.ground` (a known class
        name: its generic row; a new name or a description: the known rows mixed by text
        similarity; images: the imprinted row), and Tina writes the residual from that base.
        """
        base = self.base(slots)
        mask = slots.mask

        def reps(x):
            return None if x is None else x.repeat_interleave(samples, 0)

        codes = sample_codes(
            self.model,
            self.schedule,
            reps(slots.prompts()),
            reps(mask),
            reps(self._base_input(base)),
            sampler=sampler,
            steps=steps or self.config.eval_sampler_steps,
            seed=seed,
            guidance=self.config.guidance if guidance is None else guidance,
        )
        params = self.codec.decode(codes, reps(base))
        return zero_padding(params, reps(mask), self.spec)

    def base(self, slots: Slots) -> Tensor:
        """The base nets ``[B, P]`` of the prompts ``slots``: what Tina adds its residual to."""
        return self.codec.base_from_rows(self.grounding.ground(slots), slots.mask)

    def _base_input(self, base: Tensor) -> Tensor | None:
        """What the model sees of the base: the base scaled like the code (None without one)."""
        return base / self.codec.std if self.config.residual else None


def zero_padding(params: Tensor, mask: Tensor, spec: NetSpec) -> Tensor:
    """``params [B, P]`` with the head rows of padding slots (``mask [B, k]`` False) zeroed."""
    rows = spec.head_rows()
    params = params.clone()
    pad = ~mask
    if pad.any():
        idx = rows.unsqueeze(0).expand(mask.shape[0], -1, -1)[pad]
        params[pad.nonzero()[:, 0].unsqueeze(1).expand_as(idx), idx] = 0.0
    return params


def task_prompts(classes: Tensor, class_emb: Tensor) -> tuple[Tensor, Tensor]:
    """Prompt embeddings ``[B, k, D]`` and mask of tasks ``classes [B, k]`` (PAD = -1)."""
    mask = classes >= 0
    return class_emb[classes.clamp(min=0)] * mask.unsqueeze(-1), mask


def name_slots(classes: Tensor, names: Tensor) -> Slots:
    """Slots of tasks ``classes [B, k]`` prompted with their class names (embeddings ``names
    [C, D]``): known classes start from their generic rows, others from the name mixture."""
    return text_slots(classes, names, NAME)


# --------------------------------------------------------------------------- checkpoints
def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """sha256 of tensors' names, dtypes, shapes and bytes, in name order (device independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{value.dtype}\0{list(value.shape)}\0".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_model(spec: NetSpec, prompt_dim: int, cfg: TinaConfig) -> TinaTransformer:
    """A fresh transformer for nets of ``spec`` and prompts of ``prompt_dim``, sized by ``cfg``."""
    return TinaTransformer(
        layout_of(spec),
        prompt_dim,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        chunk_size=cfg.chunk_size,
        dropout=cfg.dropout,
        use_base=cfg.residual,
    )


def save_tina(tina: Tina, path) -> None:
    """Write a Tina checkpoint; its metadata records the sha256 of the tensors it holds."""
    tensors = {f"model.{k}": v for k, v in tina.model.state_dict().items()}
    tensors.update(tina.codec.state())
    tensors["known"] = tina.known.to(torch.uint8)
    tensors["grounding.name_emb"] = tina.grounding.name_emb
    tensors["grounding.feature_mean"] = tina.grounding.feature_mean
    meta = {
        "config": json.dumps(asdict(tina.config)),
        "spec": tina.spec.to_json(),
        "prompt_dim": str(tina.model.prompt_dim),
        "class_names": json.dumps(tina.class_names),
        "meta": json.dumps(tina.meta),
        "grounding": json.dumps(tina.grounding.settings.to_dict()),
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
        settings = GroundingSettings.from_dict(json.loads(meta["grounding"]))
        grounding_tensors = tensors["grounding.name_emb"], tensors["grounding.feature_mean"]
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path} is not a Tina checkpoint of this version (missing {err}): retrain it"
        ) from None
    model = build_model(spec, prompt_dim, cfg)
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
        Grounding(
            codec.generic, codec.spec_all, tensors["known"].bool(), *grounding_tensors, settings
        ),
    )
