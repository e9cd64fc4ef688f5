"""Rule train_generic: train the generic net on the configured classes."""

import pandas as pd

from tina.data import load_dataset
from tina.device import pick_device
from tina.io import run_step
from tina.zoo.store import save_generic, train_generic_model


def main(snakemake):
    dataset = load_dataset(snakemake.input.dataset, snakemake.input.classes)
    split = pd.read_csv(snakemake.input.class_split, keep_default_na=False)
    params = snakemake.params
    generic, report = train_generic_model(
        dataset, split, params.net, params.generic, params.seed, pick_device(params.device)
    )
    save_generic(generic, report, snakemake.output.model, snakemake.output.report)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
