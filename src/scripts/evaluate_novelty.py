"""Rule evaluate_novelty: distance and error overlap of generated nets and noisy p-models."""

from tina.evaluate import load_context
from tina.io import run_step, write_csv
from tina.novelty import evaluate_novelty


def main(snakemake):
    ctx = load_context(
        snakemake.input, snakemake.params.evaluate, snakemake.params.seed,
        device=snakemake.config["device"],
    )  # fmt: skip
    write_csv(snakemake.output.records, evaluate_novelty(ctx))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
