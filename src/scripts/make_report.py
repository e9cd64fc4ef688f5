"""Rule make_report: every experiment's table (CSV and Markdown) and figure (PNG and SVG)."""

from pathlib import Path

from tina.io import run_step
from tina.report.figures import write_experiment_figure
from tina.report.tables import write_experiment_table


def main(snakemake):
    for name in snakemake.params.experiments:
        records = list(snakemake.params.records[name])
        write_experiment_table(
            name, records, Path(getattr(snakemake.output, f"table_{name}")).parent
        )
        write_experiment_figure(
            name, records, Path(getattr(snakemake.output, f"png_{name}")).with_suffix("")
        )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
