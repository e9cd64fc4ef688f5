"""Rule evaluate_sampler: experiment 'sampler' of tina.evaluate."""

from tina.evaluate import load_context, run_experiment
from tina.io import run_step, write_csv


def main(snakemake):
    ctx = load_context(
        snakemake.input, snakemake.params.evaluate, snakemake.params.seed,
        device=snakemake.config["device"],
    )  # fmt: skip
    write_csv(snakemake.output.records, run_experiment("sampler", ctx))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
