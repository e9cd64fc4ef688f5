"""Rule evaluate_baselines: retrieval, ridge and hypernetwork on every test task."""

from tina.evaluate.context import load_context
from tina.evaluate.records import evaluate_baselines
from tina.io import run_step, write_csv


def main(snakemake):
    params = snakemake.params
    ctx = load_context(snakemake.input, params.evaluate, params.seed, device=params.device)
    write_csv(snakemake.output.records, evaluate_baselines(ctx))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
