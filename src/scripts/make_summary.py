"""Rule make_summary: summary.json, performance tables, the own-base table and results.md."""

from pathlib import Path

from tina.io import run_step
from tina.report.summary import write_run_summary


def main(snakemake):
    write_run_summary(
        list(snakemake.input.records),
        novelty_path=snakemake.input.novelty,
        benchmark_dir=snakemake.params.benchmarks,
        tables_dir=Path(snakemake.output.performance).parent,
        summary_path=snakemake.output.summary,
        results_path=snakemake.output.results,
        run=snakemake.params.run,
    )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
