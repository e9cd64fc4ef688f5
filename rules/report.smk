# Reporting: a table and a figure per experiment, then the run's summary, Tina against its own
# base over every experiment (tables/own_base) and the Markdown digest.
# Figures, tables and the summary are flagged for `snakemake --report report.html`.


# Cheap steps run on the submit host, not as cluster jobs.
localrules:
    make_tables,
    make_figures,
    make_summary,
    aggregate_seeds,


rule make_tables:
    input:
        records=experiment_records,
    output:
        table=report(
            f"{RESULTS}/tables/{{experiment}}.csv",
            caption="../report/tables.rst",
            category=experiment_category,
        ),
        markdown=f"{RESULTS}/tables/{{experiment}}.md",
    log:
        f"{RESULTS}/logs/make_tables/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_tables/{{experiment}}.tsv"
    wildcard_constraints:
        experiment="|".join(report_experiments()),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        experiment="{experiment}",
    message:
        "Tabulating experiment {wildcards.experiment}"
    script:
        "../src/scripts/make_tables.py"


rule make_figures:
    input:
        records=experiment_records,
    output:
        png=report(
            f"{RESULTS}/figures/{{experiment}}.png",
            caption="../report/experiment.rst",
            category=experiment_category,
        ),
        svg=f"{RESULTS}/figures/{{experiment}}.svg",
    log:
        f"{RESULTS}/logs/make_figures/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_figures/{{experiment}}.tsv"
    wildcard_constraints:
        experiment="|".join(report_experiments()),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        experiment="{experiment}",
        caption=experiment_caption,
    message:
        "Plotting experiment {wildcards.experiment}"
    script:
        "../src/scripts/make_figures.py"


rule make_summary:
    input:
        records=eval_records(),
        novelty=rules.evaluate_novelty.output.records,
        # after every table and figure job, so that the performance tables include them
        tables=expand(
            f"{RESULTS}/tables/{{experiment}}.csv",
            experiment=report_experiments(),
            allow_missing=True,
        ),
        figures=expand(
            f"{RESULTS}/figures/{{experiment}}.png",
            experiment=report_experiments(),
            allow_missing=True,
        ),
    output:
        summary=report(
            f"{RESULTS}/summary.json", caption="../report/summary.rst", category="Summary"
        ),
        results=f"{RESULTS}/results.md",
        performance=report(
            f"{RESULTS}/tables/performance.csv",
            caption="../report/performance.rst",
            category="Performance",
        ),
        performance_md=f"{RESULTS}/tables/performance.md",
        stages=report(
            f"{RESULTS}/tables/stages.csv",
            caption="../report/performance.rst",
            category="Performance",
        ),
        stages_md=f"{RESULTS}/tables/stages.md",
        own_base=report(
            f"{RESULTS}/tables/own_base.csv",
            caption="../report/own_base.rst",
            category="Summary",
        ),
        own_base_md=f"{RESULTS}/tables/own_base.md",
    log:
        f"{RESULTS}/logs/make_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_summary/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        run="{run}",
        benchmarks=f"{RESULTS}/benchmarks",
    message:
        "Summarising run {params.run}: summary.json, performance, own base and results.md"
    script:
        "../src/scripts/make_summary.py"


rule aggregate_seeds:
    input:
        unpack(seed_records),
    output:
        claims=report(f"{SEEDS}/tables/claims.csv", caption="../report/seeds.rst", category="Seeds"),
        claims_md=f"{SEEDS}/tables/claims.md",
        intervals=f"{SEEDS}/tables/intervals.csv",
        intervals_md=f"{SEEDS}/tables/intervals.md",
        figure=report(f"{SEEDS}/tables/claims.png", caption="../report/seeds.rst", category="Seeds"),
        figure_svg=f"{SEEDS}/tables/claims.svg",
        summary=f"{SEEDS}/summary.json",
    log:
        f"{SEEDS}/logs/aggregate_seeds.log",
    benchmark:
        f"{SEEDS}/benchmarks/aggregate_seeds/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seeds=[f"s{seed}" for seed in config["seeds"]],
        rounds=4000,
    message:
        "Pooling seeds {config[seeds]}: claims with 95% intervals"
    script:
        "../src/scripts/aggregate_seeds.py"


# Not part of `all`: its CPU column is timed on the machine that runs it (not reproducible
# byte for byte), so `snakemake cost` asks for it.
rule estimate_cost:
    output:
        table=f"{RESULTS}/tables/cost.md",
    log:
        f"{RESULTS}/logs/estimate_cost.log",
    benchmark:
        f"{RESULTS}/benchmarks/estimate_cost/job.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=config,
    message:
        "Estimating each stage's FLOPs, memory and hours"
    script:
        "../src/scripts/estimate_cost.py"
