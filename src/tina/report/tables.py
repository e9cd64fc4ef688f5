"""Reading evaluation records and tabulating them: one accuracy table per experiment, and the
paired table of Tina against its own base (``own_base``) over every experiment.

Sampled methods (Tina) have several samples per task; every statistic first averages a task's
samples, so each task counts once, then summarises over tasks. Accuracies are fractions in
[0, 1] in the CSV tables and percentages in their Markdown renderings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from tina.evaluate.novelty import novelty_table
from tina.evaluate.records import NOVELTY_COLUMNS, RECORD_COLUMNS
from tina.io import write_csv, write_text
from tina.report.style import (
    EXPERIMENT_TITLES,
    METHOD_ORDER,
    SPLIT_LABELS,
    SPLIT_ORDER,
    method_label,
    ordered,
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
OWN_BASE_COLUMNS = ("experiment", "setting", "split", "mean", "std", "wins", "tasks", "share")
ALL_SPLITS = "all"  # the own-base row pooling an experiment setting's splits
OWN_BASE_NOTE = (
    "Tina against its own base, paired per task. The base (method `base`) is the grounded "
    "prompt with no Tina: the classifier that Tina's sampling starts from and refines (known "
    "class names: their selection rows; unseen names or descriptions: known rows mixed by "
    "similarity; image prompts: imprinted rows). Per task, Tina's accuracy (averaged over its "
    "samples) minus the base's, in accuracy points: `mean` and `std` (ddof=1) over the `tasks` "
    "that have both, `wins` the tasks where Tina is strictly above its base and `wins %` their "
    "share. Positive means Tina adds to its base. Split `all` pools a setting's splits."
)


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


def read_novelty(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read and validate novelty record CSVs as one frame."""
    return check_novelty(pd.concat([pd.read_csv(p) for p in paths]))


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


# --------------------------------------------------------------------------- tables


def _ranks(values: pd.Series, order: Sequence[str] = ()) -> pd.Series:
    """Each value's position in :func:`ordered` (``values``, ``order``)."""
    return values.map({v: i for i, v in enumerate(ordered(values, order))})


def _sort_table(table: pd.DataFrame) -> pd.DataFrame:
    keys = {
        "setting": _ranks(table["setting"]),
        "split": _ranks(table["split"], SPLIT_ORDER),
        "method": _ranks(table["method"], METHOD_ORDER),
    }
    order = pd.DataFrame(keys).sort_values(["setting", "split", "method"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


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


def markdown_table(table: pd.DataFrame, title: str, note: str, formats: Mapping[str, str]) -> str:
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
    return markdown_table(shown, EXPERIMENT_TITLES.get(experiment, experiment), note, formats)


def novelty_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering of :func:`tina.evaluate.novelty.novelty_table` (accuracy in percent)."""
    shown = table.assign(accuracy=table["accuracy"] * 100.0).rename(
        columns={"accuracy": "accuracy %"}
    )
    body = shown.to_markdown(index=False, floatfmt=".3g")
    note = (
        "Means over models. `nearest_distance`: L2 distance to the nearest training p-model; "
        "`nearest_cosine`: cosine similarity to the most similar one; `wrong_iou`: IoU of the "
        "test images misclassified by the model and by the retrieved training p-model "
        "(generated) or the noise's source p-model (noisy copies)."
    )
    return f"# Novelty of generated models\n\n{note}\n\n{body}\n"


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


def own_base_differences(records: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, setting, split, task) recorded for both ``tina`` and ``base``: Tina's
    accuracy averaged over its samples minus the base's (column ``difference``)."""
    per_task = task_scores(check_records(records))
    keys = ["experiment", "setting", "split", "task_id"]
    pair = per_task[per_task["method"].isin(["tina", "base"])]
    wide = pair.pivot_table(index=keys, columns="method", values="accuracy", aggfunc="first")
    if not {"tina", "base"} <= set(wide.columns):
        return pd.DataFrame(columns=[*keys, "difference"])
    difference = (wide["tina"] - wide["base"]).dropna().rename("difference")
    return difference.reset_index()


def _own_base_stats(group: pd.DataFrame) -> dict:
    difference = group["difference"]
    wins = int((difference > 0).sum())
    return {
        "mean": float(difference.mean()),
        "std": float(difference.std()) if len(difference) > 1 else math.nan,
        "wins": wins,
        "tasks": len(difference),
        "share": wins / len(difference),
    }


def own_base_table(records: pd.DataFrame) -> pd.DataFrame:
    """Tina minus its own base (``OWN_BASE_NOTE``) per experiment, setting and split, plus a
    split ``all`` pooling the tasks of a setting with several splits (columns
    ``OWN_BASE_COLUMNS``; differences are fractions; empty where no setting has both)."""
    differences = own_base_differences(records)
    rows = []
    for (experiment, setting), part in differences.groupby(["experiment", "setting"]):
        splits = list(part.groupby("split"))
        if len(splits) > 1:
            splits.append((ALL_SPLITS, part))
        for split, group in splits:
            rows.append(
                {"experiment": experiment, "setting": setting, "split": split}
                | _own_base_stats(group)
            )
    table = pd.DataFrame(rows, columns=list(OWN_BASE_COLUMNS))
    if table.empty:
        return table
    ranks = pd.DataFrame(
        {
            "experiment": _ranks(table["experiment"], tuple(EXPERIMENT_TITLES)),
            "setting": _ranks(table["setting"]),
            "split": _ranks(table["split"], (*SPLIT_ORDER, ALL_SPLITS)),
        }
    )
    order = ranks.sort_values(["experiment", "setting", "split"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


def own_base_markdown(table: pd.DataFrame) -> str:
    """Markdown rendering of :func:`own_base_table`: differences in accuracy points."""
    if table.empty:
        body = "No experiment recorded both Tina and its base (method `base`)."
        return f"# Tina against its own base\n\n{OWN_BASE_NOTE}\n\n{body}\n"
    shown = pd.DataFrame(
        {
            "experiment": table["experiment"].map(lambda e: EXPERIMENT_TITLES.get(e, e)),
            "setting": table["setting"],
            "split": table["split"].map(lambda s: SPLIT_LABELS.get(s, s)),
            "Tina - base (points)": table["mean"] * 100.0,
            "std (points)": table["std"] * 100.0,
            "wins": table["wins"],
            "tasks": table["tasks"],
            "wins %": table["share"] * 100.0,
        }
    )
    formats = {"Tina - base (points)": "+.1f", "std (points)": ".1f", "wins %": ".0f"}
    return markdown_table(shown, "Tina against its own base", OWN_BASE_NOTE, formats)


def write_own_base(records: pd.DataFrame, out_dir: str | Path) -> pd.DataFrame:
    """Write :func:`own_base_table` as ``<out_dir>/own_base.csv`` and ``.md``; return it."""
    table = own_base_table(records)
    write_csv(Path(out_dir) / "own_base.csv", table)
    write_text(Path(out_dir) / "own_base.md", own_base_markdown(table))
    return table


def write_experiment_table(experiment: str, record_paths: Sequence, table_dir) -> None:
    """Table of one experiment: ``<table_dir>/<experiment>.csv`` and ``.md``."""
    if experiment == "novelty":
        table = novelty_table(read_novelty(record_paths))
        write_csv(Path(table_dir) / "novelty.csv", table)
        write_text(Path(table_dir) / "novelty.md", novelty_markdown(table))
        return
    records = read_records(record_paths)
    tables = make_tables(records[records["experiment"] == experiment])
    if experiment not in tables:
        raise ValueError(f"the records of {list(record_paths)} hold no {experiment!r} rows")
    write_tables({experiment: tables[experiment]}, table_dir)
