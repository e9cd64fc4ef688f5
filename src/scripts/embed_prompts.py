"""Rule embed_prompts: encode every class's name and description (cached by content)."""

import pandas as pd

from tina.device import pick_device
from tina.io import run_step
from tina.prompts import embed_class_prompts, save_embeddings


def main(snakemake):
    classes = pd.read_csv(snakemake.input.classes, keep_default_na=False)
    params = snakemake.params
    tensors = embed_class_prompts(classes, params.encoder, params.cache, pick_device(params.device))
    save_embeddings(tensors, snakemake.params.encoder, snakemake.output.embeddings)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
