"""Rules evaluate_<experiment>: the experiment of tina.evaluate that the rule's params name."""

from tina.evaluate import experiment_records
from tina.io import run_step, write_csv


def main(snakemake):
    params = snakemake.params
    records = experiment_records(
        params.experiment, snakemake.input, params.evaluate, params.seed,
        device=snakemake.config["device"], encoder=getattr(params, "encoder", None),
    )  # fmt: skip
    write_csv(snakemake.output.records, records)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
