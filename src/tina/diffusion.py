"""The Gaussian diffusion process over flat parameter vectors, with an x0-predicting model.

A ``model_fn(x_t, t) -> x0_hat`` is a closure: the caller binds the prompts, masks, base vector
and guidance (see :func:`guided`). Every random draw takes an explicit ``torch.Generator``; noise
is drawn on the generator's device and moved to the data's device, so a seed gives the same
samples whatever device the model runs on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]


class Schedule:
    """A DDPM noise schedule: ``kind`` "linear" (beta 1e-4 to 0.02) or "cosine", ``T`` steps.

    All arrays are float64 tensors of length ``T``; index ``t`` is the step from ``t - 1`` to
    ``t`` (0-based, as in Ho et al.'s code).
    """

    def __init__(self, kind: str = "linear", T: int = 1000):  # noqa: N803 - the paper's T
        if T < 1:
            raise ValueError(f"Schedule: T must be a positive number of steps, got {T}")
        self.kind, self.T = kind, T
        if kind == "linear":
            betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        elif kind == "cosine":
            betas = _cosine_betas(T)
        else:
            raise ValueError(f"Schedule: unknown kind {kind!r}; use 'linear' or 'cosine'")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        one_minus = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / one_minus
        )

    def __repr__(self) -> str:
        return f"Schedule(kind={self.kind!r}, T={self.T})"

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw ``x_t ~ q(x_t | x0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        return (
            _at(self.sqrt_alphas_cumprod, t, x0) * x0
            + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x0)`` (variance broadcast like ``x_t``)."""
        mean = (
            _at(self.posterior_mean_coef1, t, x_t) * x0
            + _at(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, _at(self.posterior_variance, t, x_t).expand_as(x_t)


def _cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:  # noqa: N803
    """Nichol & Dhariwal's cosine schedule: ``abar(t) = cos^2((t/T + s) / (1 + s) * pi/2)``."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` shaped ``[B, 1, ...]`` to broadcast against ``like``, in its dtype/device."""
    picked = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return picked.view(-1, *([1] * (like.dim() - 1)))


def _randn(shape, generator: torch.Generator, like: Tensor | None = None, device=None) -> Tensor:
    """Standard normal noise drawn with ``generator`` on its own device, then moved."""
    noise = torch.randn(shape, generator=generator, device=generator.device)
    if like is not None:
        return noise.to(device=like.device, dtype=like.dtype)
    return noise.to(device) if device is not None else noise


def x0_loss(
    model_fn: ModelFn,
    x0: Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    weight_mask: Tensor | None = None,
) -> Tensor:
    """Mean squared error of the predicted ``x0`` at a uniformly drawn timestep per sample.

    ``weight_mask`` (broadcastable to ``x0``) weights each element, e.g. 0 for padded head rows;
    the loss is the weighted sum divided by the total weight.
    """
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=generator.device)
    t = t.to(x0.device)
    x_t = schedule.q_sample(x0, t, _randn(x0.shape, generator, like=x0))
    err = (model_fn(x_t, t) - x0) ** 2
    if weight_mask is None:
        return err.mean()
    weight = weight_mask.to(err.dtype).expand_as(err)
    total = weight.sum()
    if total <= 0:
        raise ValueError("x0_loss: weight_mask is zero everywhere; nothing to fit")
    return (err * weight).sum() / total


def _clip(x: Tensor, clip: float | None) -> Tensor:
    return x if clip is None else x.clamp(-clip, clip)


@torch.no_grad()
def ddpm_sample(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    schedule: Schedule,
    generator: torch.Generator,
    *,
    clip: float | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Ancestral sampling over all ``T`` steps; returns ``x0`` of ``shape``.

    ``clip`` clamps each predicted ``x0`` to ``[-clip, clip]``; ``device`` is where the model runs
    (the generator's device when omitted).
    """
    device = generator.device if device is None else torch.device(device)
    x = _randn(shape, generator, device=device)
    for step in reversed(range(schedule.T)):
        t = torch.full((shape[0],), step, dtype=torch.long, device=device)
        mean, variance = schedule.q_posterior(_clip(model_fn(x, t), clip), x, t)
        x = mean + variance.sqrt() * _randn(shape, generator, like=x) if step > 0 else mean
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:  # noqa: N803
    """``steps`` evenly spaced timesteps from ``T - 1`` down to 0."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be between 1 and T={T}, got {steps}")
    return torch.linspace(T - 1, 0, steps).round().long().tolist()


@torch.no_grad()
def ddim_sample(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    schedule: Schedule,
    steps: int,
    generator: torch.Generator,
    *,
    eta: float = 0.0,
    clip: float | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """DDIM sampling (Song et al.) over ``steps`` timesteps; ``eta=0`` is deterministic."""
    device = generator.device if device is None else torch.device(device)
    x = _randn(shape, generator, device=device)
    times = ddim_timesteps(schedule.T, steps)
    for step, prev in zip(times, times[1:] + [-1], strict=True):
        t = torch.full((shape[0],), step, dtype=torch.long, device=device)
        x0_hat = _clip(model_fn(x, t), clip)
        abar = schedule.alphas_cumprod[step].item()
        abar_prev = schedule.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        eps = (x - math.sqrt(abar) * x0_hat) / math.sqrt(1.0 - abar)
        sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x = math.sqrt(abar_prev) * x0_hat + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _randn(shape, generator, like=x)
    return x


def guided(
    model: Callable[..., Tensor],
    guidance_scale: float,
    prompts: Tensor,
    prompt_mask: Tensor,
    base: Tensor | None = None,
) -> ModelFn:
    """A ``model_fn`` with classifier-free guidance bound to one batch of prompts.

    Returns ``uncond + s * (cond - uncond)``: ``s = 1`` is the plain conditional model (one
    forward pass), ``s = 0`` the unconditional one; the unconditional prediction uses
    ``drop_prompt`` (the model's learned null prompt).
    """
    b = prompts.shape[0]

    def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if guidance_scale == 1.0:
            return model(x_t, t, prompts, prompt_mask, base)
        drop = torch.arange(2 * b, device=x_t.device) >= b
        pair = model(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            torch.cat([prompts, prompts]),
            torch.cat([prompt_mask, prompt_mask]),
            None if base is None else torch.cat([base, base]),
            drop,
        )
        cond, uncond = pair[:b], pair[b:]
        return uncond + guidance_scale * (cond - uncond)

    return model_fn
