# Evaluation: every experiment of the paper on the trained Tina, against its baselines.
# One job per experiment of the registry tina.evaluate.experiments.EXPERIMENTS writes
# eval/<experiment>.csv in the record format of tina.evaluate.records; the scaling curves write
# one file per point; novelty writes its own columns (see tina.evaluate.novelty).


rule evaluate_baselines:
    input:
        unpack(evaluation_inputs),
    output:
        records=f"{RESULTS}/eval/baselines/records.csv",
    log:
        f"{RESULTS}/logs/evaluate_baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_baselines/job.tsv"
    priority: 5  # ahead of the scaling points (it reads the Tina file for its codec and sizes)
    conda:
        ENV
    threads: rule_threads("evaluate_baselines")
    resources:
        **rule_resources("evaluate_baselines"),
        gpu=gpus(1),
    params:
        evaluate=config["evaluate"],
        seed=run_seed,
        device=config["device"],
    message:
        "Training and scoring retrieval, ridge and hypernetwork on every test task"
    script:
        "../src/scripts/evaluate_baselines.py"


rule evaluate_experiment:
    input:
        unpack(experiment_inputs),
    output:
        records=f"{RESULTS}/eval/{{experiment}}.csv",
    log:
        f"{RESULTS}/logs/evaluate_experiment/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_experiment/{{experiment}}.tsv"
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    priority: 6  # after Tina, the experiments are the critical path: ahead of the rest
    conda:
        ENV
    threads: rule_threads("evaluate_experiment")
    resources:
        **rule_resources("evaluate_experiment"),
        gpu=gpus(1),
    params:
        experiment="{experiment}",
        evaluate=config["evaluate"],
        seed=run_seed,
        encoder=experiment_encoder,
        device=config["device"],
        message=experiment_message,
    message:
        "{params.message}"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_novelty:
    input:
        unpack(evaluation_inputs),
    output:
        records=f"{RESULTS}/eval/novelty.csv",
    log:
        f"{RESULTS}/logs/evaluate_novelty.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_novelty/job.tsv"
    priority: 5
    conda:
        ENV
    threads: rule_threads("evaluate_novelty")
    resources:
        **rule_resources("evaluate_novelty"),
        gpu=gpus(1),
    params:
        evaluate=config["evaluate"],
        seed=run_seed,
        device=config["device"],
    message:
        "Measuring the novelty of generated models"
    script:
        "../src/scripts/evaluate_novelty.py"


rule scale_tasks:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        projection=rules.fit_image_projection.output.projection,
        grounding=rules.choose_grounding.output.settings,
    output:
        records=f"{RESULTS}/eval/scaling/tasks-{{n}}.csv",
    log:
        f"{RESULTS}/logs/scale_tasks/{{n}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scale_tasks/{{n}}.tsv"
    wildcard_constraints:
        n=r"\d+",
    conda:
        ENV
    threads: rule_threads("scale_tasks")
    resources:
        **rule_resources("scale_tasks"),
        gpu=gpus(1),
    params:
        evaluate=config["evaluate"],
        seed=run_seed,
        tina=config["tina"],
        scaling=config["scaling"],
        encoder=config["encoder"],
        device=config["device"],
    message:
        "Scaling point: Tina trained on {wildcards.n} training p-models"
    script:
        "../src/scripts/scale_tasks.py"


rule scale_width:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        projection=rules.fit_image_projection.output.projection,
        grounding=rules.choose_grounding.output.settings,
    output:
        records=f"{RESULTS}/eval/scaling/width-{{width}}.csv",
    log:
        f"{RESULTS}/logs/scale_width/{{width}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scale_width/{{width}}.tsv"
    wildcard_constraints:
        width=r"\d+",
    conda:
        ENV
    threads: rule_threads("scale_width")
    resources:
        **rule_resources("scale_width"),
        gpu=gpus(1),
    params:
        evaluate=config["evaluate"],
        seed=run_seed,
        tina=config["tina"],
        scaling=config["scaling"],
        encoder=config["encoder"],
        device=config["device"],
    message:
        "Scaling point: Tina of width {wildcards.width}"
    script:
        "../src/scripts/scale_width.py"


rule scale_net:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        embeddings=rules.embed_prompts.output.embeddings,
        projection=rules.fit_image_projection.output.projection,
        grounding=rules.choose_grounding.output.settings,
    output:
        records=f"{RESULTS}/eval/scaling/net-{{arch}}.csv",
    log:
        f"{RESULTS}/logs/scale_net/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scale_net/{{arch}}.tsv"
    wildcard_constraints:
        arch=r"cnn\w+",
    priority: 1  # the longest scaling jobs (own generic and zoo) first: the cores end together
    conda:
        ENV
    threads: rule_threads("scale_net")
    resources:
        **rule_resources("scale_net"),
        gpu=gpus(1),
    params:
        evaluate=config["evaluate"],
        seed=run_seed,
        tina=config["tina"],
        scaling=config["scaling"],
        encoder=config["encoder"],
        device=config["device"],
        net=config["net"],
        generic=config["generic"],
        zoo=config["zoo"],
    message:
        "Scaling point: generic model, zoo and Tina for generated {wildcards.arch} nets"
    script:
        "../src/scripts/scale_net.py"
