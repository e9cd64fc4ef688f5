"""Rule evaluate_unseen: experiment 'unseen' of tina.evaluate (Tina, references, baselines)."""

import pandas as pd

from tina.evaluate import load_context, run_experiment
from tina.io import run_step, write_csv


def main(snakemake):
    ctx = load_context(
        snakemake.input, snakemake.params.evaluate, snakemake.params.seed,
        device=snakemake.config["device"],
    )  # fmt: skip
    baselines = pd.read_csv(snakemake.input.baselines)
    write_csv(snakemake.output.records, run_experiment("unseen", ctx, baselines=baselines))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
