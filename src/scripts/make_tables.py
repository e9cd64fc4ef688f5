"""Rule make_tables: one experiment's table (CSV and Markdown)."""

from pathlib import Path

from tina.io import run_step
from tina.report.tables import write_experiment_table


def main(snakemake):
    write_experiment_table(
        snakemake.params.experiment,
        list(snakemake.input.records),
        Path(snakemake.output.table).parent,
    )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
