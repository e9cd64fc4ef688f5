# Zoo: the generic model, then one job per shard of p-models fine-tuned from it.


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
        params=f"{RESULTS}/zoo/shard-{{shard}}.safetensors",
        meta=f"{RESULTS}/zoo/shard-{{shard}}.csv",
    log:
        f"{RESULTS}/logs/finetune_pmodels/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune_pmodels/{{shard}}.tsv"
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
        zoo=config["zoo"],
        net=config["net"],
        k=config["tasks"]["k"],
        seed=run_seed,
        device=config["device"],
    message:
        "Fine-tuning p-models of shard {wildcards.shard}"
    script:
        "../src/scripts/finetune_pmodels.py"


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
