"""Rule scale_net: generic model, p-models and Tina for another generated-net size."""

from tina.io import run_step, write_csv
from tina.scaling import load_run_data, scale_net


def main(snakemake):
    params = snakemake.params
    records = scale_net(
        load_run_data(
            snakemake.input, encoder=params.encoder, shots=params.evaluate["shots"],
            with_zoo=False, device=params.device,
        ), snakemake.wildcards.arch,
        tina=params.tina, scaling=params.scaling, evaluate=params.evaluate, net=params.net,
        generic=params.generic, zoo=params.zoo, seed=params.seed, threads=snakemake.threads,
        device=params.device,
    )  # fmt: skip
    write_csv(snakemake.output.records, records)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
