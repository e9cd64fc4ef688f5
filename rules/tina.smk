# Tina: prompt embeddings, the image projection, and training the diffusion transformer.


rule embed_prompts:
    input:
        classes=rules.prepare_data.output.classes,
    output:
        embeddings=f"{DATA}/prompts/embeddings.safetensors",
    log:
        f"{DATA}/logs/embed_prompts.log",
    benchmark:
        f"{DATA}/benchmarks/embed_prompts/job.tsv"
    conda:
        ENV
    threads: rule_threads("embed_prompts")
    resources:
        **rule_resources("embed_prompts"),
        gpu=gpus(1),
    params:
        encoder=config["encoder"],
        cache=EMBEDDING_CACHE,
        device=config["device"],
    message:
        "Encoding class names and descriptions with {params.encoder[name]}"
    script:
        "../src/scripts/embed_prompts.py"


rule fit_image_projection:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
        generic=rules.train_generic.output.model,
        embeddings=rules.embed_prompts.output.embeddings,
    output:
        projection=f"{RESULTS}/prompts/image_projection.safetensors",
    log:
        f"{RESULTS}/logs/fit_image_projection.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_image_projection/job.tsv"
    priority: 10  # the critical path (Tina trains on image prompts): ahead of the scaling points
    conda:
        ENV
    threads: rule_threads("fit_image_projection")
    resources:
        **rule_resources("fit_image_projection"),
        gpu=gpus(1),
    params:
        encoder=config["encoder"],
        seed=run_seed,
        device=config["device"],
    message:
        "Fitting the image-to-text projection on the training classes"
    script:
        "../src/scripts/fit_image_projection.py"


rule choose_grounding:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        embeddings=rules.embed_prompts.output.embeddings,
    output:
        settings=f"{RESULTS}/prompts/grounding.json",
        candidates=f"{RESULTS}/prompts/grounding.csv",
    log:
        f"{RESULTS}/logs/choose_grounding.log",
    benchmark:
        f"{RESULTS}/benchmarks/choose_grounding/job.tsv"
    priority: 10  # the critical path: ahead of the scaling points
    conda:
        ENV
    threads: rule_threads("choose_grounding")
    resources:
        **rule_resources("choose_grounding"),
    params:
        grounding=config["grounding"],
        shots=config["evaluate"]["shots"],
        k=config["tasks"]["k"],
        seed=run_seed,
    message:
        "Choosing the prompt grounding's temperatures and imprint scale on validation tasks"
    script:
        "../src/scripts/choose_grounding.py"


rule train_tina:
    input:
        dataset=rules.prepare_data.output.dataset,
        classes=rules.prepare_data.output.classes,
        class_split=rules.split_tasks.output.class_split,
        tasks=rules.split_tasks.output.tasks,
        generic=rules.train_generic.output.model,
        zoo=zoo_shards(["train"]),
        embeddings=rules.embed_prompts.output.embeddings,
        projection=rules.fit_image_projection.output.projection,
        grounding=rules.choose_grounding.output.settings,
    output:
        model=f"{RESULTS}/tina/model.safetensors",
        history=f"{RESULTS}/tina/history.csv",
    log:
        f"{RESULTS}/logs/train_tina.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_tina/job.tsv"
    priority: 10  # the critical path: ahead of the scaling points
    conda:
        ENV
    threads: rule_threads("train_tina")
    resources:
        **rule_resources("train_tina"),
        gpu=gpus(config["tina"]["devices"]),
    params:
        tina=config["tina"],
        seed=run_seed,
        encoder=config["encoder"],
        shots=config["evaluate"]["shots"],
        image_size=config["data"]["image_size"],
        device=config["device"],
    message:
        "Training Tina for {params.tina[steps]} steps"
    script:
        "../src/scripts/train_tina.py"
