"""Rule embed_prompts: encode every class's name and description (cached by content)."""

import pandas as pd

from tina.io import run_step
from tina.prompts import embed_class_prompts, save_embeddings


def main(snakemake):
    classes = pd.read_csv(snakemake.input.classes, keep_default_na=False)
    tensors = embed_class_prompts(classes, snakemake.params.encoder, snakemake.params.cache)
    save_embeddings(tensors, snakemake.params.encoder, snakemake.output.embeddings)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
