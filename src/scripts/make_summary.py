"""Rule make_summary: summary.json, performance tables and the results.md digest."""

from pathlib import Path

from tina.evaluate import write_run_summary
from tina.io import run_step


def main(snakemake):
    write_run_summary(
        list(snakemake.input.records), snakemake.input.novelty, snakemake.params.benchmarks,
        Path(snakemake.output.performance).parent, snakemake.output.summary,
        snakemake.output.results, snakemake.params.run,
    )  # fmt: skip


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
