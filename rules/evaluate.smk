# Evaluation: every experiment of the paper on the trained Tina, against its baselines.
# Each experiment writes eval/<experiment>.csv in the record format of tina.report; the scaling
# curves write one file per point; novelty writes its own columns (see tina.novelty).


rule evaluate_baselines:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
    output:
        records=f"{RESULTS}/eval/baselines/records.csv",
    log:
        f"{RESULTS}/logs/evaluate_baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_baselines/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Training and scoring retrieval, ridge and hypernetwork on every test task"
    script:
        "../src/scripts/evaluate_baselines.py"


rule evaluate_names:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
        baselines=rules.evaluate_baselines.output.records,
    output:
        records=f"{RESULTS}/eval/names.csv",
    log:
        f"{RESULTS}/logs/evaluate_names.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_names/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="names",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Evaluating class-name prompts on ID and OOD test tasks"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_descriptions:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
    output:
        records=f"{RESULTS}/eval/descriptions.csv",
    log:
        f"{RESULTS}/logs/evaluate_descriptions.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_descriptions/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="descriptions",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Evaluating description prompts"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_image_prompts:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
        projection=rules.fit_image_projection.output.projection,
    output:
        records=f"{RESULTS}/eval/image_prompts.csv",
    log:
        f"{RESULTS}/logs/evaluate_image_prompts.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_image_prompts/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="image_prompts",
        evaluate=config["evaluate"],
        seed=config["seed"],
        encoder=config["encoder"],
    message:
        "Evaluating image prompts with {params.evaluate[shots]} images per class"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_kway:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
        baselines=rules.evaluate_baselines.output.records,
    output:
        records=f"{RESULTS}/eval/kway.csv",
    log:
        f"{RESULTS}/logs/evaluate_kway.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_kway/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="kway",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Evaluating tasks with fewer classes than the net has slots"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_unseen:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
        baselines=rules.evaluate_baselines.output.records,
    output:
        records=f"{RESULTS}/eval/unseen.csv",
    log:
        f"{RESULTS}/logs/evaluate_unseen.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_unseen/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="unseen",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Evaluating tasks by their number of unseen classes"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_order:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
    output:
        records=f"{RESULTS}/eval/order.csv",
    log:
        f"{RESULTS}/logs/evaluate_order.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_order/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="order",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Evaluating {params.evaluate[orders]} class orders per task"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_sampler:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
    output:
        records=f"{RESULTS}/eval/sampler.csv",
    log:
        f"{RESULTS}/logs/evaluate_sampler.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_sampler/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        experiment="sampler",
        evaluate=config["evaluate"],
        seed=config["seed"],
    message:
        "Comparing DDPM with DDIM sampling"
    script:
        "../src/scripts/evaluate_experiment.py"


rule evaluate_novelty:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        zoo=zoo_shards(),
        embeddings=rules.embed_prompts.output.embeddings,
        tina=rules.train_tina.output.model,
    output:
        records=f"{RESULTS}/eval/novelty.csv",
    log:
        f"{RESULTS}/logs/evaluate_novelty.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_novelty/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
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
    threads: 1
    resources:
        mem_mb=4000,
        gpu=gpus(1),
        runtime=60,
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
        tina=config["tina"],
        scaling=config["scaling"],
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
    threads: 1
    resources:
        mem_mb=4000,
        gpu=gpus(1),
        runtime=60,
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
        tina=config["tina"],
        scaling=config["scaling"],
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
        embeddings=rules.embed_prompts.output.embeddings,
    output:
        records=f"{RESULTS}/eval/scaling/net-{{arch}}.csv",
    log:
        f"{RESULTS}/logs/scale_net/{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scale_net/{{arch}}.tsv"
    wildcard_constraints:
        arch=r"cnn\w+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        gpu=gpus(1),
        runtime=90,
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
        tina=config["tina"],
        scaling=config["scaling"],
        device=config["device"],
        net=config["net"],
        generic=config["generic"],
        zoo=config["zoo"],
    message:
        "Scaling point: generic model, zoo and Tina for generated {wildcards.arch} nets"
    script:
        "../src/scripts/scale_net.py"
