"""Rule diagnose_zoo: probes of the p-models' residuals on the validation tasks."""

import pandas as pd

from tina.data import load_dataset
from tina.device import pick_device
from tina.diagnostics import residual_probes
from tina.io import run_step, write_csv, write_text
from tina.tasks import read_tasks
from tina.zoo.store import load_generic, load_zoo


def main(snakemake):
    table = residual_probes(
        load_dataset(snakemake.input.dataset, snakemake.input.classes),
        read_tasks(snakemake.input.tasks),
        load_generic(snakemake.input.generic),
        load_zoo(list(snakemake.input.zoo)),
        snakemake.params.zoo,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        device=pick_device(snakemake.params.device),
    )
    write_csv(snakemake.output.table, table)
    shown = table.assign(
        accuracy=100 * table["accuracy"],
        std=100 * table["std"],
        cosine=table["cosine"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
    )
    write_text(
        snakemake.output.markdown,
        "# Zoo diagnostics (validation tasks, accuracy in %)\n\n"
        "See tina.diagnostics for what each probe measures.\n\n"
        + shown.to_markdown(index=False, floatfmt=".3g")
        + "\n",
    )


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
