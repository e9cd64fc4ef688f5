"""One compact cost table across configs (the README's "Expected cost").

Per config, the stages of :func:`tina.cost.stage_costs` in groups (the generic model, the zoo,
Tina's training, the hypernetwork baseline, every experiment's sampling, every scaling point)
and a total: FLOPs and hours summed, parameters and peak memory the group's largest, flags of
any of its stages. CPU hours are at :data:`tina.resources.REFERENCE_CPU`, not measured on the
machine, so the table is the same wherever it is printed (``tina cost --summary``).
"""

from __future__ import annotations

from tina.cost import (
    FLAG_GPU_HOURS,
    FLAG_MEMORY_GB,
    GPU,
    UTILISATION,
    StageCost,
    duration,
    si,
    table_lines,
)
from tina.resources import REFERENCE_CPU

GROUPS = ("generic", "zoo", "Tina training", "hypernetwork", "sampling", "scaling")
"""Stage groups, by the start of their stages' names."""


def group_of(stage: str) -> str:
    """The group of a stage of :func:`tina.cost.stage_costs`, by its name."""
    for group in GROUPS:
        if stage.startswith(group):
            return group
    raise ValueError(f"stage {stage!r} is in none of the groups {GROUPS}")


def _row(config: str, label: str, costs: list[StageCost]) -> list[str]:
    flags = sorted({flag for c in costs for flag in c.flags()})
    return [
        config,
        label,
        si(sum(c.flops for c in costs)),
        si(max(c.params for c in costs)),
        f"{si(max(c.peak_bytes for c in costs))}B",
        duration(sum(c.gpu_hours() for c in costs)),
        f"{sum(c.cpu_hours(REFERENCE_CPU) for c in costs):.3g}",
        "; ".join(flags),
    ]


def summary_rows(name: str, costs: list[StageCost]) -> list[list[str]]:
    """Rows of one config: a row per group (with its stage count where above one), a total."""
    rows = []
    for group in GROUPS:
        members = [c for c in costs if group_of(c.stage) == group]
        label = group + (f" ({len(members)})" if len(members) > 1 else "")
        rows.append(_row(name, label, members))
    return [*rows, _row(name, "**total**", costs)]


def summary_markdown(costs: dict[str, list[StageCost]]) -> str:
    """The table of every config's :func:`summary_rows`, with what it assumes."""
    header = ["config", "stage", "FLOPs", "parameters", "peak memory", f"{GPU.name} time"]
    header += ["CPU core-hours", "flag"]
    lines = [
        f"FLOPs counted with FlopCounterMode on the real modules; time on one {GPU.name} at "
        f"{UTILISATION:.0%} of its dense peak ({GPU.tflops['bf16']:g} TFLOP/s bf16, "
        f"{GPU.tflops['fp32']:g} fp32); CPU core-hours at {si(REFERENCE_CPU['cnn'])}FLOP/s "
        f"(CNNs) and {si(REFERENCE_CPU['transformer'])}FLOP/s (transformer) per core; peak "
        f"memory of one job. Flagged: above {FLAG_GPU_HOURS:g} GPU-hours or "
        f"{FLAG_MEMORY_GB:g} GB.",
        "",
        *table_lines(
            header, [row for name, stages in costs.items() for row in summary_rows(name, stages)]
        ),
    ]
    return "\n".join(lines)
