# Zoo: the generic model, then one job per shard of p-models fine-tuned from it (the training
# tasks' first: Tina waits for them only).


rule train_generic:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
    output:
        model=f"{RESULTS}/generic/model.safetensors",
        report=f"{RESULTS}/generic/report.json",
    log:
        f"{RESULTS}/logs/train_generic.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_generic/job.tsv"
    priority: 10  # the critical path: ahead of the scaling points
    conda:
        ENV
    threads: rule_threads("train_generic")
    resources:
        **rule_resources("train_generic"),
        gpu=gpus(1),
    params:
        generic=config["generic"],
        net=config["net"],
        seed=run_seed,
        device=config["device"],
    message:
        "Training the generic {params.net[arch]} on the {params.generic[classes]} classes"
    script:
        "../src/scripts/train_generic.py"


rule finetune_pmodels:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
    output:
        params=f"{RESULTS}/zoo/train-{{shard}}.safetensors",
        meta=f"{RESULTS}/zoo/train-{{shard}}.csv",
    log:
        f"{RESULTS}/logs/finetune_pmodels/train-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune_pmodels/train-{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    priority: 10  # the critical path: ahead of the scaling points
    conda:
        ENV
    threads: rule_threads("finetune_pmodels")
    resources:
        **rule_resources("finetune_pmodels"),
        gpu=gpus(1),
    params:
        part="train",
        zoo=config["zoo"],
        net=config["net"],
        k=config["tasks"]["k"],
        seed=run_seed,
        device=config["device"],
    message:
        "Fine-tuning the training tasks' p-models of shard {wildcards.shard}"
    script:
        "../src/scripts/finetune_pmodels.py"


# The validation and test tasks' p-models: only the evaluation and the diagnostics read them,
# so they fine-tune while Tina trains (after the training part, ahead of the scaling points).
use rule finetune_pmodels as finetune_eval_pmodels with:
    output:
        params=f"{RESULTS}/zoo/eval-{{shard}}.safetensors",
        meta=f"{RESULTS}/zoo/eval-{{shard}}.csv",
    log:
        f"{RESULTS}/logs/finetune_pmodels/eval-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune_pmodels/eval-{{shard}}.tsv"
    priority: 5
    params:
        part="eval",
        zoo=config["zoo"],
        net=config["net"],
        k=config["tasks"]["k"],
        seed=run_seed,
        device=config["device"],
    message:
        "Fine-tuning the validation and test tasks' p-models of shard {wildcards.shard}"


rule diagnose_zoo:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        zoo=zoo_shards(),
    output:
        table=report(
            f"{RESULTS}/tables/zoo_diagnostics.csv",
            caption="../report/zoo_diagnostics.rst",
            category="0. Zoo",
        ),
        markdown=f"{RESULTS}/tables/zoo_diagnostics.md",
    log:
        f"{RESULTS}/logs/diagnose_zoo.log",
    benchmark:
        f"{RESULTS}/benchmarks/diagnose_zoo/job.tsv"
    conda:
        ENV
    threads: rule_threads("diagnose_zoo")
    resources:
        **rule_resources("diagnose_zoo"),
        gpu=gpus(1),
    params:
        zoo=config["zoo"],
        seed=run_seed,
        device=config["device"],
    message:
        "Probing whether the p-models' residuals are task properties that carry over"
    script:
        "../src/scripts/diagnose_zoo.py"
