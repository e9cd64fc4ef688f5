# Reporting: a table and a figure per experiment (one job for all), then the run's summary,
# Tina against its own base over every experiment (tables/own_base) and the Markdown digest.
# Figures, tables and the summary are flagged for `snakemake --report report.html`.


# Cheap steps run on the submit host, not as cluster jobs.
localrules:
    make_report,
    make_summary,
    aggregate_seeds,


rule make_report:
    input:
        records=eval_records(),
        novelty=rules.evaluate_novelty.output.records,
    output:
        **report_files(),
    log:
        f"{RESULTS}/logs/make_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_report/job.tsv"
    conda:
        ENV
    threads: rule_threads("make_report")
    resources:
        **rule_resources("make_report"),
    params:
        experiments=report_experiments(),
        records=report_records,
    message:
        "Tabulating and plotting every experiment of run {wildcards.run}"
    script:
        "../src/scripts/make_report.py"


rule make_summary:
    input:
        records=eval_records(),
        novelty=rules.evaluate_novelty.output.records,
        # after the tables and figures, so that the performance tables include their job
        report=rules.make_report.output,
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
    threads: rule_threads("make_summary")
    resources:
        **rule_resources("make_summary"),
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
    threads: rule_threads("aggregate_seeds")
    resources:
        **rule_resources("aggregate_seeds"),
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
    threads: rule_threads("estimate_cost")
    resources:
        **rule_resources("estimate_cost"),
    params:
        config=config,
    message:
        "Estimating each stage's FLOPs, memory and hours"
    script:
        "../src/scripts/estimate_cost.py"
