"""The cost model: FLOP counts equal hand counts, memory parts sum, flags trigger."""

from pathlib import Path

import torch
from torch import nn

from tina.config import load_config
from tina.cost import (
    FLAG_GPU_HOURS,
    GPU,
    META,
    UTILISATION,
    StageCost,
    TinaShape,
    _memory,
    cnn_step,
    cost_markdown,
    count,
    stage_costs,
    tina_params,
    tina_step,
)
from tina.nets import NetSpec
from tina.sampling import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    layer = nn.Linear(32, 16).to(META)
    x = torch.zeros(8, 32, device=META, requires_grad=True)
    step = count(lambda: layer(x).sum().backward(), list(layer.parameters()), backward=True)
    assert step.flops == 3 * 2 * 8 * 32 * 16  # forward, input gradient, weight gradient
    assert step.activations == 8 * 32  # the input is saved, the weight is a parameter


def test_the_5k_cnn_step_is_the_hand_count():
    """conv 3-16 at 16x16, pool, conv 16-32 at 8x8, pool, linear 32-10; the backward pass
    has no input gradient for the images. Grouped nets count as many single nets."""
    conv1, conv2, head = 16 * 16 * 16 * 27 * 2, 8 * 8 * 32 * 144 * 2, 32 * 10 * 2
    per_image = (conv1 + conv2 + head) + (conv1 + 2 * conv2 + 2 * head)
    spec = NetSpec("cnn5k", 10)
    assert cnn_step(spec, 1, 4, 16).flops == 4 * per_image
    assert cnn_step(spec, 8, 4, 16).flops == 8 * 4 * per_image


def test_tina_is_counted_on_meta_at_its_real_parameter_count():
    shape = TinaShape(NetSpec("cnn5k", 10), 24, 32, 2, 4, 64, True)
    real = build_model(shape.spec, shape.prompt_dim, shape.tina_config())
    assert tina_params(shape) == sum(p.numel() for p in real.parameters())
    train, sample = tina_step(shape, 4, True), tina_step(shape, 4, False)
    assert 2.5 < train.flops / sample.flops < 3.5  # backward about twice the forward


def test_memory_parts_sum_to_the_peak():
    parts = _memory(10, 100, "bf16", train=True, ema=True)
    assert parts == {
        "weights": 10 * (4 + 2),  # fp32 weights and their bf16 autocast copies
        "gradients": 40,
        "optimizer": 80,
        "ema": 40,
        "activations": 200,
    }
    assert StageCost("s", "w", 1.0, 10, parts).peak_bytes == 420
    assert _memory(10, 100, "fp32", train=False, ema=False) == {"weights": 40, "activations": 400}


def test_flags_trigger_above_a_day_or_80_gb():
    per_hour = GPU.tflops["bf16"] * 1e12 * UTILISATION * 3600
    long = StageCost("long", "w", 1.01 * FLAG_GPU_HOURS * per_hour, 1, {}, "bf16")
    big = StageCost("big", "w", 1.0, 1, {"activations": 81e9})
    small = StageCost("small", "w", 0.99 * FLAG_GPU_HOURS * per_hour, 1, {"weights": 79e9}, "bf16")
    assert long.flags() == ["> 24 GPU-h"] and big.flags() == ["> 80 GB"] and small.flags() == []


def test_the_default_config_table_has_every_stage():
    config = load_config(ROOT / "config" / "config.yaml")
    costs = stage_costs(config)
    stages = [c.stage for c in costs]
    assert stages[:4] == [
        "generic (cnn5k)",
        "zoo (cnn5k)",
        "Tina training",
        "hypernetwork baseline",
    ]
    assert "sampling: sampler" in stages and "scaling: net=cnn10k" in stages
    table = cost_markdown("default", costs, {"cnn": 1e10, "transformer": 3e10})
    assert table.count("\n| ") == len(costs) + 1 and "H100" in table
    assert all(c.flops > 0 and c.peak_bytes > 0 for c in costs)
