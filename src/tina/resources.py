"""What each rule's jobs ask the scheduler for, derived from the cost model (:mod:`tina.cost`).

Each rule's jobs run one stage (or one of several) of :func:`rule_stages`:

- ``train_generic``: the generic model; ``finetune_pmodels`` (and ``finetune_eval_pmodels``,
  which shares its resources): the largest shard of the zoo's ``train`` part (the training
  tasks) or ``eval`` part (every other task), each split into ``zoo.shards`` shards
  (:func:`tina.zoo.store.shard_tasks`); ``diagnose_zoo``: the validation tasks' p-models
  fine-tuned :data:`DIAGNOSE_PASSES` times;
- ``train_tina``: Tina's training; ``evaluate_baselines``: the hypernetwork baseline, beside the
  trained Tina's fp32 weights; ``evaluate_experiment``: the sampling of each experiment;
  ``evaluate_novelty``: the novelty experiment's sampling; ``scale_tasks``, ``scale_width``,
  ``scale_net``: each point of their curve;
- ``prepare_data``, ``embed_prompts``, ``fit_image_projection``, ``choose_grounding``: no stage
  (the cost model leaves them out as small), so only the fixed part and the floor below.

A rule's memory (:func:`rule_memory_mb`) is its largest stage's peak (:attr:`StageCost.peak_bytes`)
plus a fixed part: :data:`PROCESS_MB` for the Python process, torch and the CUDA context, and
the data set in memory (:func:`dataset_mb`: its uint8 images and the float32 copy that the
trainers make). Its wall time (:func:`rule_runtime_min`) is its longest stage's time on one
:data:`tina.cost.GPU` at :data:`tina.cost.UTILISATION` (split over ``tina.devices`` for
``train_tina``), or on ``threads`` CPU cores at :data:`REFERENCE_CPU` under ``device: cpu``,
times :data:`RUNTIME_SAFETY`, and at least :data:`RUNTIME_FLOOR_MIN` (loading, start-up, and
what FLOPs do not show: the launch-bound steps of small CNNs, the memory-bound optimizer and
EMA updates, the work the cost model leaves out). Both are rounded up (:data:`MEM_STEP_MB`,
:data:`RUNTIME_STEP_MIN`). :func:`resources_yaml` prints the ``resources:`` section of a config
(``tina cost --configfile X --resources``); the paper configs paste it.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tina.config import KNOWN_CLASS_COUNTS
from tina.cost import (
    Sizes,
    StageCost,
    generic_cost,
    hypernetwork_cost,
    sampling_cost,
    scale_net_costs,
    scale_tasks_costs,
    scale_width_costs,
    tina_cost,
    zoo_cost,
)

PROCESS_MB = 3000
"""Python, torch and a CUDA context (about 0.5 GB on the host for the first two, 2 to 3 GB for
the context) in every job."""
IMAGE_BYTES = 5
"""Bytes per image element held: the data set's uint8 and the float32 copy the trainers make."""
DATASET_IMAGES = {
    "fashion_mnist": 70_000,
    "cifar100": 60_000,
    "caltech101": 8_677,  # 101 categories, BACKGROUND_Google left out
    "tiny_imagenet": 110_000,  # train and val (the test set)
    "medmnist_npz": 52_359,  # OrganAMNIST's train and test arrays (val is ignored)
}
"""Images of the data sets whose size is fixed, every split together."""
DIAGNOSE_PASSES = 3
"""Zoo passes over the validation tasks in :func:`tina.diagnostics.residual_probes`: two more
seeds and the head-only fine-tuning."""
RUNTIME_SAFETY = 2.0
RUNTIME_FLOOR_MIN = 60
MEM_STEP_MB = 1000  # memory is rounded up to whole GB
RUNTIME_STEP_MIN = 10  # wall time to 10 minutes
REFERENCE_CPU = {"cnn": 2e10, "transformer": 4e10}
"""FLOP/s of one CPU core for ``device: cpu`` runtimes and the README's CPU column: the
project's 2-core machine as :func:`tina.cost_check.cpu_throughput` measured it, rounded (16 to
20 GFLOP/s for the CNNs and 19 to 46 for the transformer, under other load)."""
SIZED_RULES = (
    "prepare_data", "train_generic", "finetune_pmodels", "diagnose_zoo", "embed_prompts",
    "fit_image_projection", "choose_grounding", "train_tina", "evaluate_baselines",
    "evaluate_experiment", "evaluate_novelty", "scale_tasks", "scale_width", "scale_net",
)  # fmt: skip
"""The rules whose resources this module sets (the report's rules keep the schema's)."""
RESOURCE_ENTRY = {"finetune_eval_pmodels": "finetune_pmodels"}
"""Rules that take another rule's entry of the resources section (``use rule ... with``)."""


def resource_entry(rule: str) -> str:
    """The resources section's entry that ``rule``'s jobs read."""
    return RESOURCE_ENTRY.get(rule, rule)


def dataset_mb(config: dict) -> float:
    """MB of the config's data set in memory (:data:`IMAGE_BYTES` per image element)."""
    data, sizes = config["data"], Sizes.of(config)
    known = DATASET_IMAGES.get(data["dataset"])
    if data["train_per_class"] and data["test_per_class"]:
        images = sizes.n_classes * (data["train_per_class"] + data["test_per_class"])
        images = min(images, known or images)
    elif known:
        images = known * sizes.n_classes // KNOWN_CLASS_COUNTS[data["dataset"]]
    else:
        raise ValueError(
            f"the image count of {data['dataset']} is unknown: set data.train_per_class and "
            "data.test_per_class"
        )
    return images * 3 * data["image_size"] ** 2 * IMAGE_BYTES / 1e6


def zoo_shard_cost(sizes: Sizes, part: str) -> StageCost:
    """One job of the zoo's ``part``: its largest shard of tasks, fine-tuned chunk by chunk."""
    train = sizes.tasks["train"]
    tasks = train if part == "train" else sum(sizes.tasks.values()) - train
    shard = math.ceil(tasks / sizes.config["zoo"]["shards"])
    cost = zoo_cost(sizes, shard, shards=1)
    return replace(cost, stage=f"{cost.stage}: {part} shard")


def diagnose_cost(sizes: Sizes) -> StageCost:
    """The zoo diagnostics: :data:`DIAGNOSE_PASSES` zoo passes over the validation tasks."""
    cost = zoo_cost(sizes, sizes.tasks["val"], shards=1)
    return replace(cost, stage="zoo diagnostics", flops=cost.flops * DIAGNOSE_PASSES)


def baselines_cost(sizes: Sizes) -> StageCost:
    """The hypernetwork baseline beside the trained Tina (its fp32 weights)."""
    cost = hypernetwork_cost(sizes)
    return replace(cost, memory=cost.memory | {"trained Tina": cost.params * 4})


def rule_stages(config: dict) -> dict[str, list[StageCost]]:
    """The stages that each of :data:`SIZED_RULES`' jobs run (see the module docstring)."""
    from tina.evaluate.experiments import EXPERIMENTS

    sizes = Sizes.of(config)
    return {
        "prepare_data": [],
        "train_generic": [generic_cost(sizes)],
        "finetune_pmodels": [zoo_shard_cost(sizes, part) for part in ("train", "eval")],
        "diagnose_zoo": [diagnose_cost(sizes)],
        "embed_prompts": [],
        "fit_image_projection": [],
        "choose_grounding": [],
        "train_tina": [tina_cost(sizes)],
        "evaluate_baselines": [baselines_cost(sizes)],
        "evaluate_experiment": [sampling_cost(sizes, name) for name in EXPERIMENTS],
        "evaluate_novelty": [sampling_cost(sizes, "novelty")],
        "scale_tasks": scale_tasks_costs(sizes),
        "scale_width": scale_width_costs(sizes),
        "scale_net": scale_net_costs(sizes),
    }


def _round_up(value: float, step: int) -> int:
    return step * math.ceil(value / step)


def rule_memory_mb(config: dict, stages: dict[str, list[StageCost]]) -> dict[str, int]:
    """MB of memory per sized rule: the fixed part and its largest stage's peak, rounded up."""
    fixed = PROCESS_MB + dataset_mb(config)
    return {
        rule: _round_up(fixed + max((c.peak_bytes for c in costs), default=0) / 1e6, MEM_STEP_MB)
        for rule, costs in stages.items()
    }


def _minutes(config: dict, rule: str, cost: StageCost) -> float:
    """Minutes of one job running ``cost`` on the config's device (no safety factor)."""
    if config["device"] == "cpu":
        threads = config["resources"][rule]["threads"]
        return cost.cpu_hours(REFERENCE_CPU) * 60 / threads
    devices = config["tina"]["devices"] if rule == "train_tina" else 1
    return cost.gpu_hours() * 60 / devices


def rule_runtime_min(config: dict, stages: dict[str, list[StageCost]]) -> dict[str, int]:
    """Minutes of wall time per sized rule: its longest stage times :data:`RUNTIME_SAFETY`, at
    least :data:`RUNTIME_FLOOR_MIN`, rounded up."""
    out = {}
    for rule, costs in stages.items():
        minutes = max((_minutes(config, rule, c) for c in costs), default=0)
        out[rule] = max(RUNTIME_FLOOR_MIN, _round_up(RUNTIME_SAFETY * minutes, RUNTIME_STEP_MIN))
    return out


def rule_resources(config: dict) -> dict[str, dict[str, int]]:
    """Threads (the config's), mem_mb and runtime of each of :data:`SIZED_RULES`."""
    stages = rule_stages(config)
    memory, runtime = rule_memory_mb(config, stages), rule_runtime_min(config, stages)
    return {
        rule: {
            "threads": config["resources"][rule]["threads"],
            "mem_mb": memory[rule],
            "runtime": runtime[rule],
        }
        for rule in SIZED_RULES
    }


def resources_yaml(config: dict) -> str:
    """The ``resources:`` section of :func:`rule_resources`, one aligned flow mapping a rule."""
    lines = ["resources:"]
    width = max(map(len, SIZED_RULES)) + 1
    for rule, values in rule_resources(config).items():
        flow = ", ".join(f"{key}: {value}" for key, value in values.items())
        lines.append(f"  {rule + ':':<{width}} {{{flow}}}")
    return "\n".join(lines)
