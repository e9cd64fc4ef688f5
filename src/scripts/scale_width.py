"""Rule scale_width: Tina retrained with another transformer width."""

from tina.io import run_step, write_csv
from tina.scaling import load_run_data, scale_width


def main(snakemake):
    params = snakemake.params
    records = scale_width(
        load_run_data(
            snakemake.input, encoder=params.encoder, shots=params.evaluate["shots"],
            device=params.device,
        ), int(snakemake.wildcards.width),
        tina=params.tina, scaling=params.scaling, evaluate=params.evaluate, seed=params.seed,
        device=params.device,
    )  # fmt: skip
    write_csv(snakemake.output.records, records)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
