# Tina: text-to-model generation, as a Snakemake workflow. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/zoo.smk"
include: "rules/tina.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


rule seeds:
    input:
        rules.aggregate_seeds.output,


rule cost:
    input:
        expand(rules.estimate_cost.output.table, run=config["run"]),
