"""Rule train_tina: train the diffusion transformer on the training p-models."""

from tina.io import run_step, write_csv
from tina.train import save_tina, train_tina_stage


def main(snakemake):
    tina, history = train_tina_stage(snakemake.input, snakemake.params.tina, snakemake.params.seed)
    save_tina(tina, snakemake.output.model)
    write_csv(snakemake.output.history, history)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
