"""One figure per experiment, on matplotlib ``Figure`` objects (Agg canvas, no pyplot state)
drawn with seaborn and written as PNG and SVG. Each method keeps one colour in every figure
(:func:`tina.report.style.method_colour`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from tina.io import atomic_path
from tina.report.style import (
    EXPERIMENT_TITLES,
    METHOD_ORDER,
    SETTING_LABELS,
    SPLIT_LABELS,
    SPLIT_ORDER,
    method_colour,
    method_label,
    ordered,
)
from tina.report.tables import check_novelty, check_records, read_novelty, read_records, task_scores

#: Figure kind per experiment; experiments not listed are drawn as bars.
FIGURE_KINDS = {
    "image_prompts": "lines",
    "scaling_tasks": "lines",
    "scaling_width": "lines",
    "scaling_net": "lines",
    "sampler": "cost",
    "order": "spread",
    "novelty": "novelty",
}
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6}
_DPI = 150


def _setting_value(setting: str) -> float | None:
    """Number a setting stands for: ``shots=4`` -> 4, ``net=cnn10k`` -> 10000, else None."""
    match = re.search(r"(\d+(?:\.\d+)?)([kKmM]?)$", setting.split("=")[-1])
    if match is None:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def _new_figure(panels: int, panel_width: float, height: float = 3.6) -> tuple[Figure, list]:
    figure = Figure(figsize=(panels * panel_width + 2.4, height), layout="constrained")
    axes = figure.subplots(1, panels, sharey=True, squeeze=False)[0]
    return figure, list(axes)


def _method_legend(figure: Figure, methods: Sequence[str], marker: bool) -> None:
    if marker:
        handles = [
            Line2D([], [], color=method_colour(m), marker="o", label=method_label(m))
            for m in methods
        ]
    else:
        handles = [Patch(color=method_colour(m), label=method_label(m)) for m in methods]
    figure.legend(handles=handles, loc="outside right upper", title="method", frameon=False)


def _accuracy_axis(ax, label: str = "accuracy (mean over tasks, ± std)") -> None:
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylabel(label)


def _panels(per_task: pd.DataFrame) -> list[str]:
    return ordered(per_task["split"], SPLIT_ORDER)


def _draw_bars(records: pd.DataFrame, experiment: str) -> Figure:
    per_task = task_scores(records)
    methods = ordered(per_task["method"], METHOD_ORDER)
    splits = _panels(per_task)
    width = 0.3 * len(methods) * per_task["setting"].nunique() + 1.2
    figure, axes = _new_figure(len(splits), width)
    for ax, split in zip(axes, splits, strict=True):
        data = per_task[per_task["split"] == split]
        sns.barplot(
            data=data,
            x="setting",
            y="accuracy",
            hue="method",
            order=ordered(data["setting"]),
            hue_order=methods,
            palette={m: method_colour(m) for m in methods},
            errorbar="sd",
            saturation=1.0,
            capsize=0.15,
            err_kws={"linewidth": 1.0},
            legend=False,
            ax=ax,
        )
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.set_xlabel(SETTING_LABELS.get(experiment, "setting"))
        _accuracy_axis(ax)
    _method_legend(figure, methods, marker=False)
    return figure


def _numeric_x(ax, values: Sequence[float]) -> None:
    """Ticks at the settings' values; a log axis when they span a factor of ten or more."""
    values = sorted(set(values))
    if min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(values, labels=[f"{v:g}" for v in values])


def _draw_lines(records: pd.DataFrame, experiment: str) -> Figure:
    per_task = task_scores(records)
    per_task["x"] = per_task["setting"].map(_setting_value)
    numeric = per_task["x"].notna().all()
    methods = ordered(per_task["method"], METHOD_ORDER)
    palette = {m: method_colour(m) for m in methods}
    splits = _panels(per_task)
    figure, axes = _new_figure(len(splits), 4.2)
    for ax, split in zip(axes, splits, strict=True):
        data = per_task[per_task["split"] == split]
        common = {"data": data, "y": "accuracy", "hue": "method", "hue_order": methods}
        common |= {"palette": palette, "errorbar": "sd", "legend": False, "ax": ax}
        if numeric:
            sns.lineplot(x="x", marker="o", err_style="bars", **common)
            _numeric_x(ax, data["x"].tolist())
        else:
            sns.pointplot(x="setting", order=ordered(data["setting"]), dodge=0.3, **common)
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.set_xlabel(SETTING_LABELS.get(experiment, "setting"))
        _accuracy_axis(ax)
    _method_legend(figure, methods, marker=True)
    return figure


def _merge_fixed_cost(per_task: pd.DataFrame) -> pd.DataFrame:
    """Merge the settings of a method whose cost does not change across them into one.

    Reference methods (the fine-tuned p-model, say) repeat across sampler settings; drawing
    them as one unlabelled point keeps the setting labels for the methods that they change.
    Returns one row per (split, method, setting, task) with mean accuracy and seconds.
    """
    cost = per_task.groupby(["split", "method", "setting"])["seconds"].mean()
    fixed = cost.groupby(["split", "method"]).agg(lambda s: np.allclose(s, s.iloc[0], rtol=1e-6))
    keys = set(fixed[fixed].index)
    merged = per_task.copy()
    is_fixed = [key in keys for key in zip(merged["split"], merged["method"], strict=True)]
    merged.loc[is_fixed, "setting"] = ""
    return (
        merged.groupby(["split", "method", "setting", "task_id"], sort=False)
        .agg(accuracy=("accuracy", "mean"), seconds=("seconds", "mean"))
        .reset_index()
    )


def _draw_cost(records: pd.DataFrame, experiment: str) -> Figure:
    per_task = task_scores(records).dropna(subset=["seconds"])
    if per_task.empty:
        raise ValueError(f"records of {experiment!r} have no seconds: cannot plot accuracy vs time")
    points = (
        _merge_fixed_cost(per_task)
        .groupby(["split", "method", "setting"], sort=False)
        .agg(accuracy=("accuracy", "mean"), std=("accuracy", "std"), seconds=("seconds", "mean"))
        .reset_index()
    )
    methods = ordered(points["method"], METHOD_ORDER)
    splits = _panels(points)
    figure, axes = _new_figure(len(splits), 4.4)
    for ax, split in zip(axes, splits, strict=True):
        data = points[points["split"] == split].sort_values("seconds")
        sns.lineplot(
            data=data,
            x="seconds",
            y="accuracy",
            hue="method",
            hue_order=methods,
            palette={m: method_colour(m) for m in methods},
            marker="o",
            sort=True,
            estimator=None,
            legend=False,
            ax=ax,
        )
        for row in data.itertuples():
            colour = method_colour(row.method)
            ax.errorbar(row.seconds, row.accuracy, yerr=row.std, color=colour, capsize=3)
            ax.annotate(
                row.setting,
                (row.seconds, row.accuracy),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
        if data["seconds"].min() > 0 and data["seconds"].max() / data["seconds"].min() >= 10:
            ax.set_xscale("log")
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.set_xlabel("seconds per generated model")
        _accuracy_axis(ax)
    _method_legend(figure, methods, marker=True)
    return figure


def order_spread(records: pd.DataFrame) -> pd.DataFrame:
    """Per (split, method, task): max - min of task accuracy across the class orders tried.

    Tasks tried in fewer than two orders are left out.
    """
    per_task = task_scores(records)
    grouped = per_task.groupby(["split", "method", "task_id"], sort=False)["accuracy"]
    spread = grouped.agg(spread=lambda a: a.max() - a.min(), orders="size").reset_index()
    return spread[spread["orders"] >= 2].reset_index(drop=True)


def _draw_spread(records: pd.DataFrame, experiment: str) -> Figure:
    spread = order_spread(records)
    if spread.empty:
        raise ValueError(f"records of {experiment!r} try no task in two or more class orders")
    methods = ordered(spread["method"], METHOD_ORDER)
    palette = {m: method_colour(m) for m in methods}
    splits = _panels(spread)
    figure, axes = _new_figure(len(splits), 0.7 * len(methods) + 1.5)
    for ax, split in zip(axes, splits, strict=True):
        data = spread[spread["split"] == split]
        common = {"data": data, "x": "method", "y": "spread", "order": methods, "ax": ax}
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert`
            warnings.filterwarnings("ignore", message="vert: bool", category=DeprecationWarning)
            sns.boxplot(
                hue="method", palette=palette, saturation=1.0, fliersize=0, legend=False, **common
            )
        sns.stripplot(color="0.15", jitter=False, size=3, alpha=0.6, **common)
        ax.set_xticks(
            range(len(methods)), labels=[method_label(m) for m in methods], rotation=30, ha="right"
        )
        ax.set_title(SPLIT_LABELS.get(split, split))
        ax.set_xlabel("")
        _accuracy_axis(ax, "spread over class orders (max - min)")
    return figure


def _source_label(source: str) -> str:
    """``generated`` -> "generated by Tina", ``noise_sigma=0.01`` -> "p-model + noise σ=0.01"."""
    if source == "generated":
        return "generated by Tina"
    if source.startswith("noise_sigma="):
        return f"p-model + noise σ={source.split('=', 1)[1]}"
    return source.replace("_", " ")


def _draw_novelty(records: pd.DataFrame, experiment: str) -> Figure:
    sources = ordered(records["source"], ("generated",))
    labels = [_source_label(s) for s in sources]
    data = records.assign(model=records["source"].map(_source_label))
    others = [label for source, label in zip(sources, labels, strict=True) if source != "generated"]
    palette = dict(zip(others, sns.color_palette("flare", len(others)), strict=True))
    palette[_source_label("generated")] = method_colour("tina")
    figure, axes = _new_figure(2, 4.2)
    panels = {
        "nearest_cosine": "cosine similarity to nearest training p-model",
        "wrong_iou": "IoU of wrong predictions with nearest p-model",
    }
    for ax, (column, label) in zip(axes, panels.items(), strict=True):
        sns.scatterplot(
            data=data,
            x=column,
            y="accuracy",
            hue="model",
            hue_order=labels,
            palette=palette,
            style="model",
            style_order=labels,
            s=25,
            alpha=0.8,
            legend=ax is axes[0],
            ax=ax,
        )
        ax.set_xlabel(label)
        _accuracy_axis(ax, "accuracy")
    legend = axes[0].get_legend()
    figure.legend(
        legend.legend_handles,
        [text.get_text() for text in legend.get_texts()],
        loc="outside right upper",
        title="model",
        frameon=False,
    )
    legend.remove()
    return figure


_DRAWERS = {
    "bars": _draw_bars,
    "lines": _draw_lines,
    "cost": _draw_cost,
    "spread": _draw_spread,
    "novelty": _draw_novelty,
}


def save_figure(figure: Figure, out_stem: str | Path) -> list[Path]:
    """Write ``figure`` to ``<out_stem>.png`` and ``<out_stem>.svg`` atomically."""
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
        path = Path(f"{out_stem}.{fmt}")
        with matplotlib.rc_context({"svg.hashsalt": "tina"}), atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=_DPI, metadata=metadata)
        paths.append(path)
    return paths


def make_figure(experiment: str, records: pd.DataFrame, out_stem: str | Path) -> list[Path]:
    """Draw ``experiment``'s figure and write ``<out_stem>.png`` and ``.svg``; return both paths.

    ``records`` are evaluation records (rows of other experiments are ignored), or, for
    ``novelty``, the novelty records. Bars with std over tasks for names, descriptions, unseen,
    k-way and unlisted experiments; lines over the setting's number for image prompts and
    scaling; accuracy against seconds for samplers; per-task spread over class orders for
    ``order``; accuracy against similarity to the nearest training p-model for novelty.
    """
    kind = FIGURE_KINDS.get(experiment, "bars")
    if kind == "novelty":
        frame = check_novelty(records)
    else:
        frame = check_records(records)
        frame = frame[frame["experiment"] == experiment]
        if frame.empty:
            raise ValueError(f"no records of experiment {experiment!r} to plot")
    figure = _DRAWERS[kind](frame, experiment)
    figure.suptitle(EXPERIMENT_TITLES.get(experiment, experiment.replace("_", " ")))
    return save_figure(figure, out_stem)


def write_experiment_figure(experiment: str, record_paths: Sequence, figure_stem) -> list[Path]:
    """Figure of one experiment from its record files: ``<figure_stem>.png`` and ``.svg``."""
    read = read_novelty if experiment == "novelty" else read_records
    return make_figure(experiment, read(record_paths), figure_stem)
