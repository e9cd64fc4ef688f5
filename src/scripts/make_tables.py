"""Rule make_tables: one experiment's table (CSV, Markdown) and figure (PNG, SVG)."""

from pathlib import Path

from tina.evaluate import write_experiment_report
from tina.io import run_step


def main(snakemake):
    write_experiment_report(
        snakemake.wildcards.experiment,
        list(snakemake.input.records),
        Path(snakemake.output.table).parent,
        Path(snakemake.output.png).with_suffix(""),
    )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
