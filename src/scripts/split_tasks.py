"""Rule split_tasks: split classes into seen/unseen and sample every split's tasks."""

import pandas as pd

from tina.io import run_step, write_csv
from tina.tasks import split_tasks


def main(snakemake):
    classes = pd.read_csv(snakemake.input.classes, keep_default_na=False)
    split, tasks = split_tasks(classes, snakemake.params.tasks, snakemake.params.seed)
    write_csv(snakemake.output.class_split, split)
    write_csv(snakemake.output.tasks, tasks)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
