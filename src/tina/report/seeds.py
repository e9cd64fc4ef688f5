"""Claims over whole-pipeline seeds: Tina against each baseline, paired, with 95% intervals.

Each seed is a run of its own (its task draw, zoo, Tina and evaluation). A claim compares Tina
with one other method on one experiment, setting and split: per task, Tina's accuracy (its
samples averaged) minus the method's, on the same task. The estimate is the mean difference over
every task of every seed; its 95% interval is a percentile bootstrap that resamples tasks with
replacement *within* each seed (stratified by seed: every resample keeps each seed's task count,
so the seeds weigh as they do in the estimate). The interval therefore covers the task draw of
each seed; how far the seeds' own means spread is reported beside it (``seed_means``). Each
claim draws its resamples from a stream of its own (seeded from the claim's experiment, setting,
split and method), so a method added to the records leaves every other claim's interval as is.

Every method recorded beside Tina is compared, in the report's method order: the references,
Tina's own base (``base``, the grounded prompt with no Tina: a positive claim means Tina adds to
its base), the image-prompt baselines and the regression baselines.

A verdict is ``yes`` when the interval excludes 0 in Tina's favour, ``no`` when it excludes 0
against it, and ``not separable`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tina.io import write_csv, write_text
from tina.report.figures import save_figure
from tina.report.style import EXPERIMENT_TITLES, METHOD_ORDER, SPLIT_LABELS, method_label, ordered
from tina.report.summary import make_summary, write_summary
from tina.report.tables import check_records, read_records
from tina.seeding import derive_seed

TASK_OFFSET = 1_000_000  # task ids of seed i become task_id + i * TASK_OFFSET when pooled
NOT_COMPARED = ("tina", "chance", "majority")  # methods no claim compares Tina with
CLAIM_COLUMNS = (
    "experiment",
    "setting",
    "split",
    "method",
    "mean",
    "low",
    "high",
    "wins",
    "tasks",
    "seeds",
    "seed_means",
    "verdict",
)


def per_task(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (seed, experiment, setting, split, method, task), samples averaged."""
    keys = ["seed", "experiment", "setting", "split", "method", "task_id"]
    return records.groupby(keys, as_index=False)["accuracy"].mean()


def bootstrap_mean(
    values: Sequence[np.ndarray], rounds: int, rng: np.random.Generator
) -> np.ndarray:
    """``rounds`` bootstrap means of the pooled ``values``, resampled within each group."""
    total = sum(len(v) for v in values)
    sums = np.zeros(rounds)
    for group in values:
        picks = rng.integers(0, len(group), size=(rounds, len(group)))
        sums += group[picks].sum(axis=1)
    return sums / total


def _stream(seed: int, *parts: str) -> np.random.Generator:
    """The bootstrap stream of one claim or interval: ``seed`` and its name ``parts``."""
    return np.random.default_rng(derive_seed(seed, *parts))


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "yes"
    if high < 0:
        return "no"
    return "not separable"


def claims(records: pd.DataFrame, rounds: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Every claim of ``records`` (with a ``seed`` column): Tina minus each other method, per
    experiment, setting and split, with the bootstrap interval and verdict (module docstring).
    """
    scores = per_task(records)
    rows = []
    groups = scores.groupby(["experiment", "setting", "split"], sort=True)
    for (experiment, setting, split), group in groups:
        wide = group.pivot_table(
            index=["seed", "task_id"], columns="method", values="accuracy", aggfunc="first"
        )
        if "tina" not in wide:
            continue
        methods = [m for m in ordered(wide.columns, METHOD_ORDER) if m not in NOT_COMPARED]
        for method in methods:
            diff = (wide["tina"] - wide[method]).dropna()
            if diff.empty:
                continue
            by_seed = [d.to_numpy() for _, d in diff.groupby(level="seed")]
            rng = _stream(seed, "claims", experiment, setting, split, method)
            means = bootstrap_mean(by_seed, rounds, rng)
            low, high = np.percentile(means, [2.5, 97.5])
            seed_means = diff.groupby(level="seed").mean()
            rows.append(
                {
                    "experiment": experiment,
                    "setting": setting,
                    "split": split,
                    "method": method,
                    "mean": float(diff.mean()),
                    "low": float(low),
                    "high": float(high),
                    "wins": float((diff > 0).mean()),
                    "tasks": len(diff),
                    "seeds": len(by_seed),
                    "seed_means": " ".join(f"{100 * m:.1f}" for m in seed_means),
                    "verdict": verdict(low, high),
                }
            )
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def method_intervals(records: pd.DataFrame, rounds: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Mean accuracy of every method per experiment, setting and split over every seed's tasks,
    with the same stratified bootstrap interval as :func:`claims`."""
    scores = per_task(records)
    rows = []
    keys = ["experiment", "setting", "split", "method"]
    for key, group in scores.groupby(keys, sort=True):
        by_seed = [g["accuracy"].to_numpy() for _, g in group.groupby("seed")]
        rng = _stream(seed, "intervals", *key)
        low, high = np.percentile(bootstrap_mean(by_seed, rounds, rng), [2.5, 97.5])
        seed_means = group.groupby("seed")["accuracy"].mean()
        rows.append(
            dict(
                zip(keys, key, strict=True),
                mean=float(group["accuracy"].mean()),
                low=float(low),
                high=float(high),
                seed_std=float(seed_means.std()) if len(seed_means) > 1 else float("nan"),
                tasks=len(group),
                seeds=len(by_seed),
            )
        )
    return pd.DataFrame(rows)


def pooled(records_by_seed: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Every seed's records as one frame with a ``seed`` column and task ids made unique."""
    frames = []
    for index, (seed, records) in enumerate(sorted(records_by_seed.items())):
        frame = check_records(records).assign(seed=seed)
        frame["task_id"] = frame["task_id"] + index * TASK_OFFSET
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _percent(value: float) -> str:
    return f"{100 * value:+.1f}"


def claims_markdown(table: pd.DataFrame) -> str:
    """The claims as a Markdown table (differences in accuracy points)."""
    lines = [
        "| experiment | setting | split | Tina minus | mean | 95% interval | wins | seed means "
        "| holds? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {EXPERIMENT_TITLES.get(row.experiment, row.experiment)} | {row.setting} "
            f"| {SPLIT_LABELS.get(row.split, row.split)} | {method_label(row.method)} "
            f"| {_percent(row.mean)} | [{_percent(row.low)}, {_percent(row.high)}] "
            f"| {100 * row.wins:.0f}% of {row.tasks} | {row.seed_means} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def intervals_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| experiment | setting | split | method | mean | 95% interval | std of seed means "
        "| tasks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {EXPERIMENT_TITLES.get(row.experiment, row.experiment)} | {row.setting} "
            f"| {SPLIT_LABELS.get(row.split, row.split)} | {method_label(row.method)} "
            f"| {100 * row.mean:.1f} | [{100 * row.low:.1f}, {100 * row.high:.1f}] "
            f"| {100 * row.seed_std:.1f} | {row.tasks} |"
        )
    return "\n".join(lines) + "\n"


def claims_figure(table: pd.DataFrame, out_stem: str | Path) -> list[Path]:
    """Every claim as a point (mean difference) with its 95% interval, one row per claim, one
    panel per experiment; written to ``<out_stem>.png`` and ``.svg``."""
    experiments = list(dict.fromkeys(table["experiment"]))
    heights = [max(1, int((table["experiment"] == e).sum())) for e in experiments]
    figure = Figure(figsize=(7.5, 1.2 + 0.22 * sum(heights)), layout="constrained")
    axes = figure.subplots(len(experiments), 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": heights})[:, 0]  # fmt: skip
    colours = {"yes": "#1b7837", "no": "#b2182b", "not separable": "#636363"}
    for ax, experiment in zip(axes, experiments, strict=True):
        rows = table[table["experiment"] == experiment].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        for yi, row in zip(y, rows.itertuples(), strict=True):
            colour = colours[row.verdict]
            ax.plot([100 * row.low, 100 * row.high], [yi, yi], color=colour, lw=2)
            ax.plot(100 * row.mean, yi, "o", color=colour, ms=4)
        labels = [
            f"{r.setting} · {SPLIT_LABELS.get(r.split, r.split)} · {method_label(r.method)}"
            for r in rows.itertuples()
        ]
        ax.set_yticks(y, labels, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(EXPERIMENT_TITLES.get(experiment, experiment), fontsize=9, loc="left")
    axes[-1].set_xlabel("Tina minus method, accuracy points (mean and 95% interval)")
    return save_figure(figure, out_stem)


def aggregate_seeds(
    records_by_seed: Mapping[int, Sequence[str | Path]],
    out_dir: str | Path,
    summary_path: str | Path,
    *,
    rounds: int = 4000,
) -> pd.DataFrame:
    """Read each seed's records, write ``claims.csv|md|png|svg`` and ``intervals.csv|md`` to
    ``out_dir`` and the aggregate ``summary.json`` (a run's keys over every seed's tasks, plus
    ``seeds``, ``claims`` and ``intervals``); return the claims."""
    frames = {seed: read_records(paths) for seed, paths in records_by_seed.items()}
    records = pooled(frames)
    table = claims(records, rounds=rounds)
    spread = method_intervals(records, rounds=rounds)
    out = Path(out_dir)
    write_csv(out / "claims.csv", table)
    write_text(out / "claims.md", claims_markdown(table))
    write_csv(out / "intervals.csv", spread)
    write_text(out / "intervals.md", intervals_markdown(spread))
    claims_figure(table, out / "claims")
    names = spread[spread["experiment"] == "names"]
    extra = {
        "seeds": sorted(frames),
        "interval_method": "percentile bootstrap over tasks within seeds, 95%",
        "intervals": {
            split: {
                row.method: [row.low, row.high]
                for row in names[names["split"] == split].itertuples()
            }
            for split in ("test_id", "test_ood")
        },
        "claims": table.to_dict(orient="records"),
    }
    write_summary(summary_path, make_summary(records.drop(columns="seed"), extra=extra))
    return table
