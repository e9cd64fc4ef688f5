"""The cost model: FLOP counts equal hand counts, memory parts sum, flags trigger; each rule's
resources follow from it, and the paper configs and the README carry what it prints."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from tina.cli import main
from tina.config import load_config
from tina.cost import (
    FLAG_GPU_HOURS,
    GPU,
    META,
    UTILISATION,
    Sizes,
    StageCost,
    TinaShape,
    _memory,
    cnn_step,
    cost_markdown,
    count,
    stage_costs,
    tina_params,
    tina_step,
    zoo_cost,
)
from tina.cost_summary import summary_markdown
from tina.nets import NetSpec
from tina.resources import (
    PROCESS_MB,
    RUNTIME_FLOOR_MIN,
    RUNTIME_SAFETY,
    SIZED_RULES,
    dataset_mb,
    resources_yaml,
    rule_memory_mb,
    rule_resources,
    rule_runtime_min,
    rule_stages,
    zoo_shard_cost,
)
from tina.sampling import build_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "config" / "paper").glob("*.yaml"))


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
        "optimizer step": 40,  # multi-tensor Adam's square roots of the second moments
        "ema": 40,
        "activations": 200,
    }
    assert StageCost("s", "w", 1.0, 10, parts).peak_bytes == 460
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


def test_a_zoo_job_is_the_largest_shard_of_its_part():
    config = load_config(ROOT / "config" / "paper" / "cifar100.yaml")
    sizes = Sizes.of(config)  # 1000 training tasks, 750 others, 16 shards of each part
    train, held_out = zoo_shard_cost(sizes, "train"), zoo_shard_cost(sizes, "eval")
    assert train.flops == zoo_cost(sizes, 63, shards=1).flops  # ceil(1000 / 16), one chunk
    assert held_out.flops == zoo_cost(sizes, 47, shards=1).flops  # ceil(750 / 16)
    assert train.params == 63 * NetSpec("cnn5k", 10).num_params


def test_the_data_set_in_memory_is_its_images_as_uint8_and_float32():
    cifar = load_config(ROOT / "config" / "paper" / "cifar100.yaml")
    assert dataset_mb(cifar) == 60_000 * 3 * 32 * 32 * 5 / 1e6
    default = load_config(ROOT / "config" / "config.yaml")  # 100 classes x (60 + 30) at 16 px
    assert dataset_mb(default) == 100 * 90 * 3 * 16 * 16 * 5 / 1e6


def test_memory_is_the_fixed_part_and_the_largest_stage_rounded_up():
    config = load_config(ROOT / "config" / "config.yaml")
    small = StageCost("small", "w", 1.0, 1, {"weights": 1e9})
    large = StageCost("large", "w", 1.0, 1, {"weights": 2.5e9, "activations": 1e9})
    memory = rule_memory_mb(config, {"a": [small, large], "b": []})
    fixed = PROCESS_MB + dataset_mb(config)
    assert fixed + 3500 <= memory["a"] < fixed + 4500 and memory["a"] % 1000 == 0
    assert fixed <= memory["b"] < fixed + 1000


def test_runtime_is_the_longest_stage_with_the_safety_factor_and_a_floor():
    config = load_config(ROOT / "config" / "paper" / "cifar100.yaml")  # device: auto (a GPU)
    per_hour = GPU.tflops["bf16"] * 1e12 * UTILISATION * 3600
    two_hours = StageCost("long", "w", 2 * per_hour, 1, {}, "bf16")
    short = replace(two_hours, flops=per_hour / 60)
    runtime = rule_runtime_min(config, {"train_tina": [short, two_hours], "a": [short], "b": []})
    assert runtime == {
        "train_tina": RUNTIME_SAFETY * 120,
        "a": RUNTIME_FLOOR_MIN,
        "b": RUNTIME_FLOOR_MIN,
    }


def test_every_sized_rule_has_stages_or_is_left_to_the_fixed_part():
    stages = rule_stages(load_config(ROOT / "config" / "config.yaml"))
    assert tuple(stages) == SIZED_RULES
    unsized = {rule for rule, costs in stages.items() if not costs}
    assert unsized == {"prepare_data", "embed_prompts", "fit_image_projection", "choose_grounding"}
    assert [c.stage for c in stages["finetune_pmodels"]] == [
        "zoo (cnn5k): train shard",
        "zoo (cnn5k): eval shard",
    ]
    assert len(stages["evaluate_experiment"]) == 7 and len(stages["scale_net"]) == 2


@pytest.fixture(scope="module")
def paper_configs() -> dict[str, dict]:
    return {path.stem: load_config(path) for path in PAPER}


def test_each_paper_config_sets_the_resources_the_cost_model_gives(paper_configs):
    """The config's section is what `tina cost --resources` prints (regenerate it when this
    fails), under a header that names the command."""
    for name, config in paper_configs.items():
        text = (ROOT / "config" / "paper" / f"{name}.yaml").read_text()
        assert resources_yaml(config) in text, f"{name}: resources differ from tina cost's"
        assert f"tina cost --configfile config/paper/{name}.yaml --resources" in text, name
        assert {r: config["resources"][r] for r in SIZED_RULES} == rule_resources(config)


def test_the_readme_cost_table_is_what_tina_cost_prints(paper_configs):
    table = summary_markdown({name: stage_costs(c) for name, c in paper_configs.items()})
    readme = (ROOT / "README.md").read_text()
    regenerate = "tina cost --summary --configfile config/paper/*.yaml"
    assert f"\n{table}\n" in readme, f"the README's table is stale: {regenerate}"


def test_tina_cost_prints_the_resources_section(capsys):
    path = ROOT / "config" / "config.yaml"
    assert main(["cost", "--configfile", str(path), "--resources"]) == 0
    assert capsys.readouterr().out == resources_yaml(load_config(path)) + "\n"
    assert main(["cost", "--configfile", str(path), str(path), "--resources"]) == 2
    assert "--configfile takes one file, except with --summary" in capsys.readouterr().err
