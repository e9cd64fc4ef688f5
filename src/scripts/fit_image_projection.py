"""Rule fit_image_projection: map generic-net image features into the text space."""

import pandas as pd

from tina.data import load_dataset
from tina.device import pick_device
from tina.io import run_step
from tina.prompts import fit_projection, load_embeddings, save_projection
from tina.zoo.store import load_generic


def main(snakemake):
    dataset = load_dataset(snakemake.input.dataset, snakemake.input.classes)
    split = pd.read_csv(snakemake.input.class_split, keep_default_na=False)
    generic = load_generic(snakemake.input.generic)
    names = load_embeddings(snakemake.input.embeddings)["names"]
    projection, _ = fit_projection(
        dataset, split, generic.flat, generic.spec, names,
        steps=snakemake.params.encoder["projection_steps"], seed=snakemake.params.seed,
        device=pick_device(snakemake.params.device),
    )  # fmt: skip
    save_projection(projection, snakemake.output.projection)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
