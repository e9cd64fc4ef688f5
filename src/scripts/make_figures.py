"""Rule make_figures: one experiment's figure (PNG and SVG)."""

from pathlib import Path

from tina.io import run_step
from tina.report.figures import write_experiment_figure


def main(snakemake):
    write_experiment_figure(
        snakemake.params.experiment,
        list(snakemake.input.records),
        Path(snakemake.output.png).with_suffix(""),
    )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
