"""Rule evaluate_baselines: retrieval, ridge and hypernetwork on every test task."""

from tina.evaluate import evaluate_baselines, load_context
from tina.io import run_step, write_csv


def main(snakemake):
    ctx = load_context(
        snakemake.input, snakemake.params.evaluate, snakemake.params.seed,
        device=snakemake.config["device"],
    )  # fmt: skip
    write_csv(snakemake.output.records, evaluate_baselines(ctx))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
