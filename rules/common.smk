# Helpers shared by every stage: config validation, paths and target lists.
import os
import re
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
# Jobs (local, conda or cluster) import the package from this checkout: src/ goes first on the
# PYTHONPATH that job processes inherit.
_inherited = os.getenv("PYTHONPATH")
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (os.path.join(workflow.basedir, "src"), _inherited) if p)
)

from tina.config import ConfigError, validate_config
from tina.evaluate.experiments import EXPERIMENTS
from tina.preflight import check_resources

try:
    validate_config(config)
    check_resources(config)
except (ConfigError, FileNotFoundError) as err:
    raise WorkflowError(str(err)) from None

# A run's outputs live under results/<run>/; `snakemake seeds` adds one run per extra seed,
# results/<run>-s<seed>/, with the same config but that seed (its task draw, zoo, Tina and
# evaluation). The data set and its prompt embeddings do not depend on the seed: every seed
# shares the config run's (DATA).
DATA = f"results/{config['run']}"
RESULTS = "results/{run}"
RUN_PATTERN = re.escape(config["run"]) + r"(?:-s\d+)?"


wildcard_constraints:
    run=RUN_PATTERN,


def seed_run(seed):
    """The run of one seed: the config's own run for its seed, <run>-s<seed> for the others."""
    return config["run"] if seed == config["seed"] else f"{config['run']}-s{seed}"


def run_seed(wildcards):
    """The seed of a run (the `seed` param of every rule whose work depends on it)."""
    suffix = wildcards.run.removeprefix(config["run"])
    return int(suffix.removeprefix("-s")) if suffix else config["seed"]


def gpus(n):
    """GPUs a job that can use them asks for: n, or 0 when the config pins the CPU.

    Locally, profiles/default runs one GPU job at a time; on SLURM these jobs go to the GPU
    partition. `device: cpu` drops the requests, so a CPU-only machine runs them in parallel."""
    return 0 if config["device"] == "cpu" else n


def rule_threads(rule):
    """Threads of a rule's jobs: the config's resources section (schema defaults per rule)."""
    return config["resources"][rule]["threads"]


def rule_resources(rule):
    """Memory (mem_mb, MB) and wall time (runtime, minutes) of a rule's jobs, from the config's
    resources section; the SLURM profile turns them into --mem and --time."""
    section = config["resources"][rule]
    return {"mem_mb": section["mem_mb"], "runtime": section["runtime"]}


ENV = "../envs/tina.yaml"
# Text embeddings are cached by content across runs (a text is never encoded twice).
EMBEDDING_CACHE = "results/cache/embeddings"


def zoo_shards(parts=("train", "eval")):
    """Parameter files of every p-model shard of the zoo's ``parts`` (``train``: the training
    tasks'; ``eval``: the others'); the shard count per part comes from the config."""
    return expand(
        f"{RESULTS}/zoo/{{part}}-{{shard}}.safetensors",
        part=parts,
        shard=range(config["zoo"]["shards"]),
        allow_missing=True,
    )


# Scaling curves: point kind -> the config key listing its values.
SCALING_KEYS = {"tasks": "tasks", "width": "widths", "net": "nets"}


def evaluation_inputs(wildcards):
    """Inputs that every evaluation job reads: data, tasks, zoo, prompts and the trained Tina."""
    return {
        "dataset": rules.prepare_data.output.dataset,
        "classes": rules.prepare_data.output.classes,
        "tasks": rules.split_tasks.output.tasks,
        "zoo": zoo_shards(),
        "embeddings": rules.embed_prompts.output.embeddings,
        "tina": rules.train_tina.output.model,
    }


def experiment_inputs(wildcards):
    """Inputs of one experiment (tina.evaluate.experiments.EXPERIMENTS): the evaluation inputs,
    plus the baselines' records or the image projection where the experiment takes them."""
    experiment = EXPERIMENTS[wildcards.experiment]
    inputs = evaluation_inputs(wildcards)
    if experiment.baselines:
        inputs["baselines"] = rules.evaluate_baselines.output.records
    if experiment.images:
        inputs["projection"] = rules.fit_image_projection.output.projection
    return inputs


def experiment_encoder(wildcards):
    """The encoder section for an experiment that embeds images (None for the others)."""
    return config["encoder"] if EXPERIMENTS[wildcards.experiment].images else None


def experiment_message(wildcards):
    """The registry's message of one experiment, filled in from the evaluate section."""
    return EXPERIMENTS[wildcards.experiment].message.format(**config["evaluate"])


def scaling_records(kind):
    """Records file of every point of one scaling curve (none when its list is empty)."""
    values = config["scaling"][SCALING_KEYS[kind]]
    return expand(f"{RESULTS}/eval/scaling/{kind}-{{value}}.csv", value=values, allow_missing=True)


def eval_records():
    """Records file of every evaluation experiment and scaling point."""
    files = [f"{RESULTS}/eval/{experiment}.csv" for experiment in EXPERIMENTS]
    return files + [f for kind in SCALING_KEYS for f in scaling_records(kind)]


def report_experiments():
    """Every experiment that gets a table and a figure."""
    scaling = [f"scaling_{kind}" for kind in SCALING_KEYS if scaling_records(kind)]
    return [*EXPERIMENTS, *scaling, "novelty"]


def experiment_records(experiment):
    """Records file(s) of one reported experiment."""
    if experiment.startswith("scaling_"):
        return scaling_records(experiment.removeprefix("scaling_"))
    return [f"{RESULTS}/eval/{experiment}.csv"]


def report_outputs():
    """Tables, figures, summary, Tina against its own base and Markdown digest of the run."""
    experiments = report_experiments()
    tables = expand(
        f"{RESULTS}/tables/{{name}}.{{ext}}",
        name=experiments,
        ext=["csv", "md"],
        allow_missing=True,
    )
    figures = expand(
        f"{RESULTS}/figures/{{name}}.{{ext}}",
        name=experiments,
        ext=["png", "svg"],
        allow_missing=True,
    )
    summary = [f"{RESULTS}/summary.json", f"{RESULTS}/results.md"]
    own_base = [f"{RESULTS}/tables/own_base.csv", f"{RESULTS}/tables/own_base.md"]
    return [*tables, *figures, *summary, *own_base]


# Report category of each experiment's table and figure: the registry's experiments numbered in
# their order, then the scaling curves and novelty.
REPORT_CATEGORIES = {
    name: f"{number}. {experiment.category}"
    for number, (name, experiment) in enumerate(EXPERIMENTS.items(), 1)
}
REPORT_CATEGORIES |= {
    f"scaling_{kind}": f"{len(EXPERIMENTS) + 1}. Scaling" for kind in SCALING_KEYS
}
REPORT_CATEGORIES["novelty"] = f"{len(EXPERIMENTS) + 2}. Novelty"


def report_records(wildcards):
    """Records file(s) of every reported experiment of one run, by experiment."""
    return {
        name: expand(experiment_records(name), run=wildcards.run) for name in report_experiments()
    }


def report_files():
    """The outputs of make_report by name; each experiment's table (CSV flagged for the
    report, Markdown) and figure (PNG flagged, SVG)."""
    files = {}
    for name in report_experiments():
        category = REPORT_CATEGORIES.get(name, name)
        caption = "scaling" if name.startswith("scaling_") else name
        files |= {
            f"table_{name}": report(
                f"{RESULTS}/tables/{name}.csv", caption="../report/tables.rst", category=category
            ),
            f"markdown_{name}": f"{RESULTS}/tables/{name}.md",
            f"png_{name}": report(
                f"{RESULTS}/figures/{name}.png",
                caption=f"../report/{caption}.rst",
                category=category,
            ),
            f"svg_{name}": f"{RESULTS}/figures/{name}.svg",
        }
    return files


def all_targets():
    """Every final output of the config's run."""
    outputs = [
        f"{RESULTS}/tasks.csv",
        *zoo_shards(),
        f"{RESULTS}/prompts/image_projection.safetensors",
        f"{RESULTS}/tina/model.safetensors",
        f"{RESULTS}/tables/zoo_diagnostics.md",
        *report_outputs(),
    ]
    return [f"{DATA}/data/dataset.safetensors", *expand(outputs, run=config["run"])]


def seed_records(wildcards):
    """The records that the seeds' aggregate reads: every experiment of every seed's run."""
    return {
        f"s{seed}": expand(
            f"{RESULTS}/eval/{{experiment}}.csv", run=seed_run(seed), experiment=EXPERIMENTS
        )
        for seed in config["seeds"]
    }


SEEDS = f"{DATA}-seeds"
