"""Tables, figures, performance and the machine-readable summary of a finished run.

Input is the long record format that the evaluation rules write, one CSV per experiment
(``results/<run>/eval/<experiment>.csv``) with one row per (method, setting, task, sample):
``experiment, setting, method, split, task_id, k, sample, accuracy, seconds``. Accuracies are
fractions in [0, 1]. Sampled methods (Tina) have several samples per task; every statistic first
averages a task's samples, so each task counts once, then summarises over tasks.

Figures are built on matplotlib ``Figure`` objects (Agg canvas, no pyplot state) with seaborn,
and written as PNG and SVG. Each method keeps one colour in every figure.
"""

from __future__ import annotations

import json
import math
import re
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from tina.io import atomic_path, write_csv, write_text
from tina.metrics import chance

RECORD_COLUMNS = (
    "experiment",
    "setting",
    "method",
    "split",
    "task_id",
    "k",
    "sample",
    "accuracy",
    "seconds",
)
NOVELTY_COLUMNS = (
    "task_id",
    "source",
    "accuracy",
    "nearest_distance",
    "nearest_cosine",
    "wrong_iou",
)
TABLE_COLUMNS = (
    "experiment",
    "setting",
    "split",
    "method",
    "mean",
    "std",
    "count",
    "median",
    "best",
    "samples",
    "seconds",
)
ACCURACY_COLUMNS = ("mean", "std", "median", "best")

METHOD_ORDER = (
    "tina",
    "pmodel",
    "generic_selection",
    "retrieval",
    "ridge",
    "hypernetwork",
    "chance",
    "majority",
)
METHOD_LABELS = {
    "tina": "Tina",
    "pmodel": "p-model (fine-tuned)",
    "generic_selection": "generic + selection",
    "retrieval": "retrieval (nearest p-model)",
    "ridge": "ridge regression",
    "hypernetwork": "hypernetwork",
    "chance": "chance",
    "majority": "majority class",
}
SPLIT_ORDER = ("test_id", "test_ood", "test_kway", "val")
SPLIT_LABELS = {
    "test_id": "test, in-distribution",
    "test_ood": "test, out-of-distribution",
    "test_kway": "test, k-way",
    "val": "validation",
}
EXPERIMENT_TITLES = {
    "names": "Prompts with class names",
    "descriptions": "Prompts with class descriptions",
    "image_prompts": "Image prompts",
    "kway": "Tasks with fewer classes (k-way)",
    "unseen": "Tasks with unseen classes",
    "order": "Sensitivity to the order of classes",
    "scaling_tasks": "Scaling the number of training tasks",
    "scaling_width": "Scaling the diffusion model",
    "scaling_net": "Scaling the generated network",
    "sampler": "Sampler: accuracy against generation time",
    "novelty": "Novelty of generated models",
}
SETTING_LABELS = {
    "names": "prompt",
    "descriptions": "prompt",
    "image_prompts": "images per class (shots)",
    "kway": "classes per task",
    "unseen": "unseen classes per task",
    "order": "class order",
    "scaling_tasks": "training tasks",
    "scaling_width": "diffusion model width",
    "scaling_net": "generated network size (parameters)",
    "sampler": "sampler",
}
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

_BASE_PALETTE = sns.color_palette("colorblind", 10)
METHOD_COLOURS = {
    "tina": _BASE_PALETTE[0],
    "pmodel": _BASE_PALETTE[2],
    "generic_selection": _BASE_PALETTE[1],
    "retrieval": _BASE_PALETTE[4],
    "ridge": _BASE_PALETTE[5],
    "hypernetwork": _BASE_PALETTE[6],
    "chance": _BASE_PALETTE[7],
    "majority": (0.78, 0.78, 0.78),
}
_EXTRA_PALETTE = sns.color_palette("dark", 10)
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6}
_DPI = 150


# --------------------------------------------------------------------------- records


def check_records(records: pd.DataFrame) -> pd.DataFrame:
    """Validate evaluation records and return a copy with numeric columns typed."""
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"records lack columns {missing}; the evaluation rules write {list(RECORD_COLUMNS)}"
        )
    if records.empty:
        raise ValueError("records are empty: run the evaluation rules before reporting")
    frame = records.copy()
    for column in ("task_id", "k", "sample"):
        frame[column] = frame[column].astype("int64")
    for column in ("accuracy", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype("float64")
    for column in ("experiment", "setting", "method", "split"):
        frame[column] = frame[column].astype(str)
    bad = frame[~frame["accuracy"].between(0.0, 1.0)]
    if not bad.empty:
        raise ValueError(
            f"{len(bad)} records have accuracy outside [0, 1] (first: {bad['accuracy'].iloc[0]}); "
            "accuracies must be fractions, not percentages"
        )
    return frame


def read_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read and validate the evaluation CSVs of a run as one frame."""
    paths = [Path(p) for p in paths]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"missing evaluation records {absent}: run the evaluation rules")
    if not paths:
        raise ValueError("no evaluation record files given")
    return check_records(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True))


def check_novelty(records: pd.DataFrame) -> pd.DataFrame:
    """Validate novelty records (``eval/novelty.csv``) and return a copy."""
    missing = [c for c in NOVELTY_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"novelty records lack columns {missing}; expected {list(NOVELTY_COLUMNS)}"
        )
    if records.empty:
        raise ValueError("novelty records are empty: run the novelty rule before reporting")
    frame = records.copy()
    frame["source"] = frame["source"].astype(str)
    return frame


def task_scores(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, setting, split, method, task): its samples' mean accuracy.

    Columns ``accuracy`` (mean over samples), ``median``, ``best`` (max), ``samples``, ``k`` and
    ``seconds`` (mean over samples, NaN when not measured).
    """
    keys = ["experiment", "setting", "split", "method", "task_id"]
    grouped = records.groupby(keys, sort=False)
    return grouped.agg(
        accuracy=("accuracy", "mean"),
        median=("accuracy", "median"),
        best=("accuracy", "max"),
        samples=("accuracy", "size"),
        k=("k", "first"),
        seconds=("seconds", "mean"),
    ).reset_index()


# --------------------------------------------------------------------------- ordering


def _natural_key(text: str) -> tuple:
    """Sort key that orders ``shots=4`` before ``shots=16`` and ``k=2`` before ``k=10``."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def _ordered(values: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """Unique ``values``: those in ``order`` first, in that order, then the rest naturally."""
    unique = set(values)
    known = [v for v in order if v in unique]
    return known + sorted(unique - set(order), key=_natural_key)


def _sort_table(table: pd.DataFrame) -> pd.DataFrame:
    ranks = {
        "setting": _ordered(table["setting"]),
        "split": _ordered(table["split"], SPLIT_ORDER),
        "method": _ordered(table["method"], METHOD_ORDER),
    }
    keys = {c: table[c].map({v: i for i, v in enumerate(order)}) for c, order in ranks.items()}
    order = pd.DataFrame(keys).sort_values(["setting", "split", "method"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


def method_colour(method: str) -> tuple[float, float, float]:
    """The colour of ``method`` in every figure (a stable colour for unknown methods too)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _EXTRA_PALETTE[zlib.crc32(method.encode()) % len(_EXTRA_PALETTE)]


def method_label(method: str) -> str:
    """Readable name of ``method`` for legends and tables."""
    return METHOD_LABELS.get(method, method.replace("_", " "))


# --------------------------------------------------------------------------- tables


def make_tables(records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Accuracy per (experiment, setting, split, method), one table per experiment.

    ``mean``/``std``/``count`` are over tasks (std with ddof=1, NaN for one task), after
    averaging each task's samples. For sampled methods ``median`` and ``best`` are the mean
    over tasks of each task's median and best sample (NaN for deterministic methods).
    ``samples`` is the most samples per task, ``seconds`` the mean seconds per model.
    """
    per_task = task_scores(check_records(records))
    keys = ["experiment", "setting", "split", "method"]
    table = (
        per_task.groupby(keys, sort=False)
        .agg(
            mean=("accuracy", "mean"),
            std=("accuracy", "std"),
            count=("task_id", "size"),
            median=("median", "mean"),
            best=("best", "mean"),
            samples=("samples", "max"),
            seconds=("seconds", "mean"),
        )
        .reset_index()
    )
    deterministic = table["samples"] <= 1
    table.loc[deterministic, ["median", "best"]] = math.nan
    table = table[list(TABLE_COLUMNS)]
    return {
        name: _sort_table(part)
        for name, part in sorted(table.groupby("experiment", sort=False), key=lambda x: x[0])
    }


def _markdown(table: pd.DataFrame, title: str, note: str, formats: Mapping[str, str]) -> str:
    """A Markdown table with a title; NaN cells read ``n/a``."""
    shown = table.astype(object).where(table.notna(), None)
    floatfmt = [formats.get(column, "g") for column in shown.columns]
    body = shown.to_markdown(index=False, floatfmt=floatfmt, missingval="n/a")
    return f"# {title}\n\n{note}\n\n{body}\n"


def table_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering of one experiment's table: accuracies in percent, readable names."""
    experiment = str(table["experiment"].iloc[0]) if len(table) else "results"
    shown = table.drop(columns="experiment").copy()
    for column in ACCURACY_COLUMNS:
        shown[column] = shown[column] * 100.0
    shown["method"] = shown["method"].map(method_label)
    shown["split"] = shown["split"].map(lambda s: SPLIT_LABELS.get(s, s))
    shown = shown.rename(columns={c: f"{c} %" for c in ACCURACY_COLUMNS})
    formats = {f"{c} %": ".1f" for c in ACCURACY_COLUMNS} | {"seconds": ".3g"}
    note = (
        "Accuracy in percent: mean and std (ddof=1) over `count` tasks, each task first averaged "
        "over its samples; `median` and `best` average each task's median and best sample "
        "(sampled methods only); `seconds` per generated or trained model."
    )
    return _markdown(shown, EXPERIMENT_TITLES.get(experiment, experiment), note, formats)


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Write each experiment's table as ``<out_dir>/<experiment>.csv`` and ``.md``."""
    out_dir = Path(out_dir)
    written = []
    for experiment, table in tables.items():
        csv_path, md_path = out_dir / f"{experiment}.csv", out_dir / f"{experiment}.md"
        write_csv(csv_path, table)
        write_text(md_path, table_markdown(table))
        written += [csv_path, md_path]
    return written


# --------------------------------------------------------------------------- performance


def _read_benchmark(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    missing = [c for c in ("s", "max_rss") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"benchmark file {path} lacks columns {missing}: not a Snakemake benchmark"
        )
    if frame.empty:
        raise ValueError(f"benchmark file {path} has a header but no measurements")
    return frame


def performance_table(benchmark_dir: str | Path) -> pd.DataFrame:
    """One row per benchmarked job from Snakemake ``benchmark:`` TSV files.

    Files are ``<benchmark_dir>/<rule>/<wildcards>.tsv`` (or ``<benchmark_dir>/<rule>.tsv``
    for a rule without wildcards). Columns: ``rule``, ``job`` (the wildcards part of the path),
    ``seconds`` (wall time, mean over repeats), ``max_rss_mb`` (peak resident memory in MB,
    NaN when the job ended before it could be sampled), ``cpu_seconds`` and ``repeats``.
    """
    benchmark_dir = Path(benchmark_dir)
    if not benchmark_dir.is_dir():
        raise FileNotFoundError(
            f"benchmark folder {benchmark_dir} does not exist: run the workflow first "
            "(every rule writes its benchmark there)"
        )
    rows = []
    for path in sorted(benchmark_dir.rglob("*.tsv")):
        relative = path.relative_to(benchmark_dir).with_suffix("")
        rule = relative.parts[0]
        job = "/".join(relative.parts[1:])
        frame = _read_benchmark(path)
        cpu = frame["cpu_time"] if "cpu_time" in frame.columns else pd.Series([math.nan])
        rows.append(
            {
                "rule": rule,
                "job": job,
                "seconds": float(frame["s"].mean()),
                "max_rss_mb": float(frame["max_rss"].max()),
                "cpu_seconds": float(pd.to_numeric(cpu, errors="coerce").mean()),
                "repeats": len(frame),
            }
        )
    columns = ["rule", "job", "seconds", "max_rss_mb", "cpu_seconds", "repeats"]
    return pd.DataFrame(rows, columns=columns)


def stage_summary(perf: pd.DataFrame) -> pd.DataFrame:
    """Per rule: ``jobs``, total wall ``seconds`` over its jobs and peak ``max_rss_mb``.

    Sorted from the most to the least total time.
    """
    summary = (
        perf.groupby("rule", sort=True)
        .agg(
            jobs=("job", "size"),
            seconds=("seconds", "sum"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    return summary.sort_values("seconds", ascending=False, kind="stable").reset_index(drop=True)


def write_performance(perf: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``performance.{csv,md}`` (per job) and ``stages.{csv,md}`` (per rule)."""
    out_dir = Path(out_dir)
    stages = stage_summary(perf)
    formats = {"seconds": ".1f", "max_rss_mb": ".0f", "cpu_seconds": ".1f"}
    documents = {
        "performance": (perf, "Performance per job", "Wall seconds and peak resident MB."),
        "stages": (stages, "Performance per stage", "Wall seconds summed over a rule's jobs."),
    }
    written = []
    for name, (frame, title, note) in documents.items():
        write_csv(out_dir / f"{name}.csv", frame)
        write_text(out_dir / f"{name}.md", _markdown(frame, title, note, formats))
        written += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    return written


# --------------------------------------------------------------------------- summary


def _main_records(records: pd.DataFrame, experiment: str, setting: str | None) -> pd.DataFrame:
    main = records[records["experiment"] == experiment]
    if main.empty:
        found = sorted(records["experiment"].unique())
        raise ValueError(f"no records of experiment {experiment!r} (found {found})")
    settings = sorted(main["setting"].unique())
    if setting is None and len(settings) > 1:
        raise ValueError(
            f"experiment {experiment!r} has settings {settings}: pass setting= to pick the main one"
        )
    if setting is not None:
        main = main[main["setting"] == setting]
        if main.empty:
            raise ValueError(f"experiment {experiment!r} has no setting {setting!r} ({settings})")
    return main


def _chance_from_k(records: pd.DataFrame) -> tuple[float, float, int]:
    """Mean, std and count over tasks of 1/k when no ``chance`` method was recorded."""
    per_task = records.groupby("task_id")["k"].first().map(chance)
    std = float(per_task.std()) if len(per_task) > 1 else math.nan
    return float(per_task.mean()), std, len(per_task)


def _split_summary(table: pd.DataFrame, records: pd.DataFrame) -> dict[str, Any]:
    """Mean, std and count per summary method for one split (None where undefined)."""
    rows = table.set_index("method")

    def stats(method: str) -> tuple[float | None, float | None, int]:
        if method not in rows.index:
            return None, None, 0
        row = rows.loc[method]
        return row["mean"], row["std"], int(row["count"])

    result = {m: stats(m) for m in ("tina", "pmodel", "generic_selection", "retrieval")}
    regressors = [m for m in ("ridge", "hypernetwork") if m in rows.index]
    best = max(regressors, key=lambda m: rows.loc[m, "mean"], default=None)
    result["hypernetwork"] = stats(best) if best else (None, None, 0)
    if "chance" in rows.index:
        result["chance"] = stats("chance")
    elif not records.empty:
        result["chance"] = _chance_from_k(records)
    else:
        result["chance"] = (None, None, 0)
    tina, pmodel = result["tina"][0], result["pmodel"][0]
    ratio = tina / pmodel if tina is not None and pmodel else None
    return {
        **{m: value[0] for m, value in result.items()},
        "hypernetwork_method": best,
        "std": {m: value[1] for m, value in result.items()},
        "count": {m: value[2] for m, value in result.items()},
        "ratio_tina_to_pmodel": ratio,
    }


def _mean_seconds(records: pd.DataFrame, method: str) -> float | None:
    seconds = records.loc[records["method"] == method, "seconds"].dropna()
    return float(seconds.mean()) if len(seconds) else None


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (JSON null)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} into the JSON summary: {value!r}")


def make_summary(
    records: pd.DataFrame,
    perf: pd.DataFrame | None = None,
    extra: Mapping[str, Any] | None = None,
    experiment: str = "names",
    setting: str | None = None,
) -> dict[str, Any]:
    """The run's headline numbers for ``summary.json`` (JSON-ready; NaN becomes null).

    ``test_id`` and ``test_ood`` hold mean task accuracy (fractions) of ``tina``, ``pmodel``,
    ``generic_selection``, ``retrieval``, ``hypernetwork`` (the better of ridge and hypernetwork
    by mean, named in ``hypernetwork_method``) and ``chance`` (1/k when not recorded), with
    ``std`` and ``count`` objects over tasks and ``ratio_tina_to_pmodel``; methods without
    records are null. Taken from ``experiment`` (and ``setting``, needed when it has several).
    Top level: ``seconds_per_generated_model``, ``seconds_per_pmodel`` (mean recorded seconds)
    and ``stage_seconds`` (wall seconds per rule from ``perf``). ``extra`` adds new keys.
    """
    main = _main_records(check_records(records), experiment, setting)
    table = make_tables(main)[experiment]
    summary: dict[str, Any] = {
        split: _split_summary(table[table["split"] == split], main[main["split"] == split])
        for split in ("test_id", "test_ood")
    }
    summary["seconds_per_generated_model"] = _mean_seconds(main, "tina")
    summary["seconds_per_pmodel"] = _mean_seconds(main, "pmodel")
    stages = stage_summary(perf) if perf is not None and len(perf) else None
    summary["stage_seconds"] = (
        {} if stages is None else dict(zip(stages["rule"], stages["seconds"], strict=True))
    )
    clashes = sorted(set(extra or {}) & set(summary))
    if clashes:
        raise ValueError(f"extra summary keys {clashes} would overwrite computed ones")
    summary.update(extra or {})
    return json_safe(summary)


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as strict JSON (a NaN left in it is an error, not ``NaN``)."""
    text = json.dumps(summary, indent=2, allow_nan=False)
    write_text(path, text + "\n")
    return Path(path)


# --------------------------------------------------------------------------- figures


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
    return _ordered(per_task["split"], SPLIT_ORDER)


def _draw_bars(records: pd.DataFrame, experiment: str) -> Figure:
    per_task = task_scores(records)
    methods = _ordered(per_task["method"], METHOD_ORDER)
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
            order=_ordered(data["setting"]),
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
    methods = _ordered(per_task["method"], METHOD_ORDER)
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
            sns.pointplot(x="setting", order=_ordered(data["setting"]), dodge=0.3, **common)
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
    methods = _ordered(points["method"], METHOD_ORDER)
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
    methods = _ordered(spread["method"], METHOD_ORDER)
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
    sources = _ordered(records["source"], ("generated",))
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


def _save(figure: Figure, out_stem: str | Path) -> list[Path]:
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
    return _save(figure, out_stem)
