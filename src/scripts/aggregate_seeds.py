"""Rule aggregate_seeds: every seed's records pooled into claims with 95% intervals."""

from pathlib import Path

from tina.io import run_step
from tina.report.seeds import aggregate_seeds


def main(snakemake):
    records = {
        int(name.removeprefix("s")): list(getattr(snakemake.input, name))
        for name in snakemake.params.seeds
    }
    aggregate_seeds(
        records, Path(snakemake.output.claims).parent, snakemake.output.summary,
        rounds=snakemake.params.rounds,
    )  # fmt: skip


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
