"""Tests of the diffusion process: schedules, q_sample, posterior, x0 loss, samplers, guidance."""

import math

import pytest
import torch

from tina.diffusion import (
    Schedule,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    guided,
    x0_loss,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the machine's cores are shared, and small ops are faster this way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(schedule: Schedule, mu: float, s: float):
    """The exact E[x0 | x_t] for data x0 ~ N(mu, s^2): an optimal x0 predictor."""

    def model_fn(x_t, t):
        abar = schedule.alphas_cumprod[t].to(x_t.dtype)[:, None]
        gain = s**2 * abar.sqrt() / (abar * s**2 + 1 - abar)
        return mu + gain * (x_t - abar.sqrt() * mu)

    return model_fn


def test_linear_schedule_known_values():
    sched = Schedule("linear", 1000)
    assert sched.betas.shape == (1000,)
    assert sched.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4, abs=1e-12)
    assert sched.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert sched.betas[-1].item() == pytest.approx(0.02)


def test_cosine_schedule_monotone_and_ends_near_zero():
    sched = Schedule("cosine", 1000)
    abar = sched.alphas_cumprod
    assert (abar[1:] < abar[:-1]).all()
    assert abar[-1].item() < 1e-3
    assert abar[0].item() > 0.999
    assert (sched.betas <= 0.999).all() and (sched.betas > 0).all()


def test_bad_schedule_arguments_raise():
    with pytest.raises(ValueError, match="unknown kind 'quadratic'"):
        Schedule("quadratic")
    with pytest.raises(ValueError, match="positive number of steps"):
        Schedule("linear", 0)
    with pytest.raises(ValueError, match="between 1 and T=10"):
        ddim_timesteps(10, 11)


def test_q_sample_statistics():
    sched = Schedule("linear", 1000)
    x0 = torch.full((200_000,), 2.0)
    t = torch.full((200_000,), 500)
    x_t = sched.q_sample(x0, t, torch.randn(200_000, generator=gen(0)))
    abar = sched.alphas_cumprod[500].item()
    assert x_t.mean().item() == pytest.approx(2.0 * math.sqrt(abar), abs=0.01)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - abar), abs=0.01)
    assert torch.equal(
        sched.q_sample(x0[:4], torch.zeros(4, dtype=torch.long), torch.zeros(4)),
        x0[:4] * math.sqrt(1 - 1e-4),
    )


@pytest.mark.parametrize("step", [1, 500, 999])
def test_posterior_matches_bayes_rule(step):
    """q(x_{t-1} | x_t, x0) is proportional to N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1})
    times N(x_t; sqrt(a_t) x_{t-1}, b_t): a product of Gaussians, solved here by hand."""
    b = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    abar_prev = math.prod(1 - bi for bi in b[:step])
    alpha = 1 - b[step]
    precision = 1 / (1 - abar_prev) + alpha / b[step]
    x0, x_t = torch.tensor([0.7, -1.3]), torch.tensor([0.2, 0.9])
    expected_mean = math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * x_t / b[step]
    expected_mean = expected_mean / precision
    mean, var = Schedule("linear").q_posterior(x0, x_t, torch.tensor([step, step]))
    assert torch.allclose(mean, expected_mean, atol=1e-6)
    assert torch.allclose(var, torch.full((2,), 1 / precision), rtol=1e-5)


def test_posterior_hand_computed_first_step():
    """At t=1: b0 = 1e-4, b1 = 1.199199e-4, var = b0 b1 / (b0 + b1 - b0 b1) = 5.4532e-5."""
    _, var = Schedule("linear").q_posterior(torch.zeros(1), torch.zeros(1), torch.tensor([1]))
    assert var.item() == pytest.approx(5.4532e-5, rel=1e-4)


def test_x0_loss_oracle_zero_and_weight_mask():
    sched = Schedule("linear", 1000)
    x0 = torch.randn(8, 5, generator=gen(0))
    assert x0_loss(lambda x_t, t: x0, x0, sched, gen(1)).item() == 0.0
    zero_loss = x0_loss(lambda x_t, t: torch.zeros_like(x_t), x0, sched, gen(1))
    assert zero_loss.item() == pytest.approx(x0.square().mean().item(), rel=1e-6)
    mask = torch.ones(8, 5)
    mask[:, 3:] = 0
    wrong_on_padding = x0.clone()
    wrong_on_padding[:, 3:] += 100.0
    masked = x0_loss(lambda x_t, t: wrong_on_padding, x0, sched, gen(1), weight_mask=mask)
    assert masked.item() == 0.0
    with pytest.raises(ValueError, match="zero everywhere"):
        x0_loss(lambda x_t, t: x0, x0, sched, gen(1), weight_mask=torch.zeros(8, 5))


def test_x0_loss_uses_generator():
    sched = Schedule("linear", 1000)
    x0 = torch.randn(16, 4, generator=gen(0))

    def model_fn(x_t, t):
        return 0.5 * x_t

    first = x0_loss(model_fn, x0, sched, gen(3))
    assert first.item() == x0_loss(model_fn, x0, sched, gen(3)).item()
    assert first.item() != x0_loss(model_fn, x0, sched, gen(4)).item()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_oracle_samplers_return_x0(kind):
    sched = Schedule(kind, 1000)
    x0 = torch.randn(6, 7, generator=gen(0))

    def oracle(x_t, t):
        return x0

    for eta in (0.0, 1.0):
        sample = ddim_sample(oracle, x0.shape, sched, 50, gen(1), eta=eta)
        assert torch.allclose(sample, x0, atol=1e-5)
    assert torch.allclose(ddpm_sample(oracle, x0.shape, sched, gen(1)), x0, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reproduce_gaussian_data(sampler):
    """With the exact denoiser of N(1.5, 0.5^2) data, the samples have that mean and std.

    (Deterministic DDIM under-disperses with few steps: std 0.44 at 25, 0.474 at 50, 0.495 at 200
    steps on the linear schedule; 200 steps is close enough for the tolerance.)
    """
    sched = Schedule("linear", 1000)
    model_fn = gaussian_denoiser(sched, 1.5, 0.5)
    shape = (20_000, 1)
    if sampler == "ddpm":
        x = ddpm_sample(model_fn, shape, sched, gen(0))
    else:
        x = ddim_sample(model_fn, shape, sched, 200, gen(0), eta=0.0)
    assert x.mean().item() == pytest.approx(1.5, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, abs=0.02)


def test_ddim_eta1_over_all_steps_is_ddpm():
    """With eta=1 and every timestep, DDIM's update is the DDPM posterior step, same noise."""
    sched = Schedule("cosine", 50)
    model_fn = gaussian_denoiser(sched, -0.5, 2.0)
    ddpm = ddpm_sample(model_fn, (64, 3), sched, gen(5))
    ddim = ddim_sample(model_fn, (64, 3), sched, 50, gen(5), eta=1.0)
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    assert not torch.allclose(ddim, ddim_sample(model_fn, (64, 3), sched, 50, gen(5), eta=0.0))


def test_samplers_seeded():
    sched = Schedule("cosine", 200)
    model_fn = gaussian_denoiser(sched, 0.0, 1.0)
    for sample in (
        lambda g: ddpm_sample(model_fn, (4, 3), sched, g),
        lambda g: ddim_sample(model_fn, (4, 3), sched, 20, g, eta=0.0),
        lambda g: ddim_sample(model_fn, (4, 3), sched, 20, g, eta=1.0),
    ):
        assert torch.equal(sample(gen(7)), sample(gen(7)))
        assert (sample(gen(7)) - sample(gen(8))).abs().min() > 0


def test_clip_bounds_predictions():
    sched = Schedule("linear", 100)
    x = ddim_sample(lambda x_t, t: torch.full_like(x_t, 5.0), (3, 2), sched, 10, gen(0), clip=1.0)
    assert torch.allclose(x, torch.ones(3, 2))
    x = ddpm_sample(lambda x_t, t: torch.full_like(x_t, -5.0), (3, 2), sched, gen(0), clip=2.0)
    assert torch.allclose(x, torch.full((3, 2), -2.0))


def fake_model(x_t, t, prompts, prompt_mask, base=None, drop_prompt=None):
    """cond = x_t + sum of prompts; uncond (dropped) = x_t."""
    cond = prompts.sum(dim=(1, 2))[:, None] * prompt_mask.any(1, keepdim=True)
    if drop_prompt is not None:
        cond = torch.where(drop_prompt[:, None], torch.zeros_like(cond), cond)
    return x_t + cond + (0 if base is None else base)


def test_guided_mixes_conditional_and_unconditional():
    prompts = torch.ones(2, 3, 4)
    mask = torch.ones(2, 3, dtype=torch.bool)
    x_t, t = torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)
    assert torch.allclose(guided(fake_model, 1.0, prompts, mask)(x_t, t), torch.full((2, 5), 12.0))
    assert torch.allclose(guided(fake_model, 0.0, prompts, mask)(x_t, t), torch.zeros(2, 5))
    assert torch.allclose(guided(fake_model, 3.0, prompts, mask)(x_t, t), torch.full((2, 5), 36.0))
    base = torch.ones(2, 5)
    with_base = guided(fake_model, 3.0, prompts, mask, base)(x_t, t)
    assert torch.allclose(with_base, torch.full((2, 5), 37.0))
