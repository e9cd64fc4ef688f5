"""Performance of a run from Snakemake's ``benchmark:`` files: per job and per rule (stage).

Every rule writes ``<run>/benchmarks/<rule>/<wildcards>.tsv`` (``job.tsv`` for a rule without
wildcards), so a stage is a rule and its jobs are its wildcard values: the rule
``evaluate_experiment`` has one job per experiment, ``finetune_pmodels`` one per shard.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tina.io import write_csv, write_text
from tina.report.tables import markdown_table


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
        write_text(out_dir / f"{name}.md", markdown_table(frame, title, note, formats))
        written += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
    return written
