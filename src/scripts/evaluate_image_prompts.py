"""Rule evaluate_image_prompts: k-shot image prompts through the encoder's image path."""

from tina.evaluate import image_embedder, load_context, run_experiment
from tina.io import run_step, write_csv


def main(snakemake):
    ctx = load_context(
        snakemake.input, snakemake.params.evaluate, snakemake.params.seed,
        device=snakemake.config["device"],
    )  # fmt: skip
    embed = image_embedder(ctx.tina, snakemake.params.encoder, snakemake.input.projection)
    write_csv(snakemake.output.records, run_experiment("image_prompts", ctx, embed=embed))


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
