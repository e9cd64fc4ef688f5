# Data: render or load the data set, then split classes and sample tasks.


rule prepare_data:
    output:
        dataset=f"{DATA}/data/dataset.safetensors",
        classes=f"{DATA}/data/classes.csv",
    log:
        f"{DATA}/logs/prepare_data.log",
    benchmark:
        f"{DATA}/benchmarks/prepare_data/job.tsv"
    conda:
        ENV
    threads: rule_threads("prepare_data")
    resources:
        **rule_resources("prepare_data"),
    params:
        data=config["data"],
        seed=config["seed"],
    message:
        "Preparing the {params.data[dataset]} data set"
    script:
        "../src/scripts/prepare_data.py"


rule split_tasks:
    input:
        classes=rules.prepare_data.output.classes,
    output:
        tasks=f"{RESULTS}/tasks.csv",
        class_split=f"{RESULTS}/class_split.csv",
    log:
        f"{RESULTS}/logs/split_tasks.log",
    benchmark:
        f"{RESULTS}/benchmarks/split_tasks/job.tsv"
    conda:
        ENV
    threads: rule_threads("split_tasks")
    resources:
        **rule_resources("split_tasks"),
    params:
        tasks=config["tasks"],
        seed=run_seed,
    message:
        "Splitting classes and sampling tasks"
    script:
        "../src/scripts/split_tasks.py"
