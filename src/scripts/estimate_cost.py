"""Rule estimate_cost: the config's cost table (tina.cost), CPU hours from this machine."""

from tina.cost import cost_markdown, stage_costs
from tina.cost_check import cpu_throughput
from tina.io import run_step, write_text


def main(snakemake):
    config = snakemake.params.config
    text = cost_markdown(config["run"], stage_costs(config), cpu_throughput())
    write_text(snakemake.output.table, text)


run_step(snakemake, main, snakemake)  # noqa: F821 (injected by Snakemake)
