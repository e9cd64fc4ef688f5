"""Rule prepare_data: render or load the configured data set and cache it."""

from tina.data import prepare_dataset, save_dataset
from tina.io import run_step


def main(snakemake):
    dataset = prepare_dataset(**snakemake.params.data, seed=snakemake.params.seed)
    save_dataset(dataset, snakemake.output.dataset, snakemake.output.classes)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
