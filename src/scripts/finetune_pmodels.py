"""Rules finetune_pmodels and finetune_eval_pmodels: fine-tune the p-models of one shard of
one part of the zoo (training tasks, or the others)."""

from tina.data import load_dataset
from tina.device import pick_device
from tina.io import run_step
from tina.tasks import read_tasks
from tina.zoo.store import finetune_shard, load_generic, save_shard, shard_tasks


def main(snakemake):
    dataset = load_dataset(snakemake.input.dataset, snakemake.input.classes)
    tasks = read_tasks(snakemake.input.tasks)
    generic = load_generic(snakemake.input.generic)
    shard = int(snakemake.wildcards.shard)
    mine = shard_tasks(tasks, snakemake.params.part, shard, snakemake.params.zoo["shards"])
    result = finetune_shard(
        dataset, mine, generic,
        zoo=snakemake.params.zoo, net=snakemake.params.net, k=snakemake.params.k,
        seed=snakemake.params.seed, threads=snakemake.threads,
        device=pick_device(snakemake.params.device),
    )  # fmt: skip
    save_shard(result, snakemake.output.params, snakemake.output.meta)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
