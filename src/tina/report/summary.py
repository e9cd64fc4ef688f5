"""The run's headline numbers (``summary.json``) and its Markdown digest (``results.md``).

The summary takes the main experiment (class-name prompts): mean task accuracy of Tina and of
each baseline on the in-distribution and out-of-distribution test tasks, with seconds per model
and wall seconds per workflow stage, plus Tina against its own base in every experiment that
records both (``own_base``); the digest shows the main table, the own-base table, then every
experiment's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tina.evaluate.novelty import novelty_table
from tina.io import write_text
from tina.metrics import chance
from tina.report.performance import performance_table, stage_summary, write_performance
from tina.report.style import EXPERIMENT_TITLES, METHOD_ORDER, SPLIT_LABELS, method_label
from tina.report.tables import (
    ALL_SPLITS,
    check_records,
    make_tables,
    novelty_markdown,
    own_base_markdown,
    own_base_table,
    read_records,
    table_markdown,
    write_own_base,
)


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

    result = {m: stats(m) for m in ("tina", "pmodel", "generic_selection", "base", "retrieval")}
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


def own_base_summary(table: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``own_base`` entry of the summary from :func:`tina.report.tables.own_base_table`:
    per experiment and setting, Tina minus its base over the setting's tasks (``mean``, ``std``,
    ``wins``, ``n``, ``share``; every split pooled) and the same per split under ``splits``."""

    def numbers(row) -> dict[str, Any]:
        return {
            "mean": row.mean, "std": row.std, "wins": row.wins, "n": row.tasks, "share": row.share,
        }  # fmt: skip

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for (experiment, setting), part in table.groupby(["experiment", "setting"], sort=False):
        rows = {row.split: numbers(row) for row in part.itertuples()}
        pooled = rows.pop(ALL_SPLITS, None) or next(iter(rows.values()))
        summary.setdefault(experiment, {})[setting] = pooled | {"splits": rows}
    return summary


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
    records are null (``base``, Tina's own base, too). Taken from ``experiment`` (and
    ``setting``, needed when it has several). Top level: ``seconds_per_generated_model``,
    ``seconds_per_pmodel`` (mean recorded seconds), ``stage_seconds`` (wall seconds per rule
    from ``perf``) and ``own_base`` (:func:`own_base_summary` over every experiment of
    ``records``). ``extra`` adds new keys.
    """
    records = check_records(records)
    main = _main_records(records, experiment, setting)
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
    summary["own_base"] = own_base_summary(own_base_table(records))
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


def _cell(row: pd.Series | None) -> str:
    if row is None or pd.isna(row["mean"]):
        return "n/a"
    std = "n/a" if pd.isna(row["std"]) else f"{100 * row['std']:.1f}"
    return f"{100 * row['mean']:.1f} ± {std} ({int(row['count'])})"


def main_table_markdown(table: pd.DataFrame, setting: str = "names") -> str:
    """Methods by split (test-ID, test-OOD): accuracy % as mean ± std (tasks)."""
    part = table[table["setting"] == setting]
    splits = [s for s in ("test_id", "test_ood") if s in set(part["split"])]
    methods = [m for m in METHOD_ORDER if m in set(part["method"])]
    methods += sorted(set(part["method"]) - set(methods))
    cells = {(r["split"], r["method"]): r for _, r in part.iterrows()}
    header = "| method | " + " | ".join(SPLIT_LABELS.get(s, s) for s in splits) + " |"
    lines = [header, "|" + "---|" * (len(splits) + 1)]
    for method in methods:
        values = " | ".join(_cell(cells.get((split, method))) for split in splits)
        lines.append(f"| {method_label(method)} | {values} |")
    return "\n".join(lines) + "\n"


def _demote(markdown: str, levels: int = 2) -> str:
    """Markdown with every heading ``levels`` deeper (so tables nest under a section)."""
    prefix = "#" * levels
    return "\n".join(
        prefix + line if line.startswith("#") else line for line in markdown.split("\n")
    )


def results_markdown(
    run: str,
    summary: dict,
    tables: dict[str, pd.DataFrame],
    novelty: pd.DataFrame | None,
    stages: pd.DataFrame | None = None,
    own_base: pd.DataFrame | None = None,
) -> str:
    """The Markdown digest of a run: the main table, Tina against its own base (``own_base``,
    from :func:`tina.report.tables.own_base_table`, when any experiment records it), then every
    experiment's table."""

    def number(value, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    ratios = ", ".join(
        f"{split} {number(summary[split]['ratio_tina_to_pmodel'], '.2f')}"
        for split in ("test_id", "test_ood")
    )
    parts = [
        f"# Results of run `{run}`\n",
        "## Main result: prompts that name the classes\n",
        "Accuracy in percent on test tasks: mean ± std over tasks (number of tasks); each "
        "task's Tina samples are averaged first.\n",
        main_table_markdown(tables["names"]),
        f"Tina's accuracy as a fraction of the fine-tuned p-model's: {ratios}. Seconds per "
        f"generated model: {number(summary['seconds_per_generated_model'], '.3g')}; per "
        f"fine-tuned p-model: {number(summary['seconds_per_pmodel'], '.3g')}.\n",
    ]
    if own_base is not None and not own_base.empty:
        parts.append(_demote(own_base_markdown(own_base), levels=1))
    parts.append("## Experiments\n")
    order = [name for name in EXPERIMENT_TITLES if name in tables]
    order += sorted(set(tables) - set(order))
    parts += [_demote(table_markdown(tables[name])) for name in order]
    if novelty is not None:
        parts.append(_demote(novelty_markdown(novelty)))
    if stages is not None:
        shown = stages.to_markdown(index=False, floatfmt=".1f")
        parts.append(
            f"### Wall time per stage\n\nSeconds summed over each rule's jobs.\n\n{shown}\n"
        )
    return "\n".join(parts)


def write_run_summary(
    record_paths: Sequence,
    *,
    novelty_path,
    benchmark_dir,
    tables_dir,
    summary_path,
    results_path,
    run: str,
) -> dict:
    """``summary.json``, the performance tables and the own-base table (``own_base.csv`` and
    ``.md``, in ``tables_dir``) and ``results.md`` of a finished run, from its record files,
    novelty records and Snakemake benchmark folder."""
    records = read_records(record_paths)
    perf = performance_table(benchmark_dir)
    write_performance(perf, tables_dir)
    own_base = write_own_base(records, tables_dir)
    novelty = novelty_table(pd.read_csv(novelty_path)) if novelty_path else None
    extra = {"run": run}
    if novelty is not None:
        extra["novelty"] = {
            row["source"]: {c: row[c] for c in novelty.columns if c != "source"}
            for _, row in novelty.iterrows()
        }
    summary = make_summary(records, perf, extra=extra, experiment="names", setting="names")
    write_summary(summary_path, summary)
    tables = make_tables(records)
    digest = results_markdown(run, summary, tables, novelty, stage_summary(perf), own_base)
    write_text(results_path, digest)
    return summary
