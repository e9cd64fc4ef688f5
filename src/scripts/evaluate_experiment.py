"""Rule evaluate_experiment: the experiment of tina.evaluate.experiments that the rule's
``experiment`` wildcard names."""

from tina.evaluate.experiments import experiment_records
from tina.io import run_step, write_csv


def main(snakemake):
    params = snakemake.params
    records = experiment_records(
        params.experiment,
        snakemake.input,
        params.evaluate,
        params.seed,
        device=params.device,
        encoder=params.encoder,
    )
    write_csv(snakemake.output.records, records)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
