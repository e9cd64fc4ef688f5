"""Rule evaluate_novelty: distance and error overlap of generated nets and noisy p-models."""

from tina.evaluate.context import load_context
from tina.evaluate.novelty import evaluate_novelty
from tina.io import run_step, write_csv


def main(snakemake):
    params = snakemake.params
    ctx = load_context(snakemake.input, params.evaluate, params.seed, device=params.device)
    write_csv(snakemake.output.records, evaluate_novelty(ctx))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
