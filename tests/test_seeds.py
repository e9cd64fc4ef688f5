"""Claims over whole-pipeline seeds: paired differences, stratified bootstrap, verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tina.report.seeds import (
    TASK_OFFSET,
    aggregate_seeds,
    bootstrap_mean,
    claims,
    claims_markdown,
    pooled,
    verdict,
)
from tina.report.style import METHOD_ORDER
from tina.report.summary import make_summary

#: Tina's own base and the image-prompt baselines, as the evaluation records them: the base in
#: every setting of these experiments, the shot methods in image prompts only.
BASE_SETTINGS = {
    "descriptions": ["names", "descriptions", "mixed"],
    "unseen": ["unseen=1", "unseen=5"],
    "image_prompts": ["shots=1", "shots=4"],
}
SHOT_METHODS = ("imprint", "imprint_selection", "logistic_head", "finetune_shots")


def seed_records(seed: int, n_tasks: int = 30) -> pd.DataFrame:
    """Records of one seed's names experiment: Tina 3 samples per task; ridge 5 points below
    Tina on every task, retrieval 5 points above, selection equal on average but noisy."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in range(n_tasks):
        split = "test_id" if task < n_tasks // 2 else "test_ood"
        level = rng.uniform(0.3, 0.7)
        for sample in range(3):
            rows.append(("tina", split, task, sample, level + 0.01 * (sample - 1)))
        rows.append(("ridge", split, task, 0, level - 0.05))
        rows.append(("retrieval", split, task, 0, level + 0.05))
        rows.append(("generic_selection", split, task, 0, level + rng.normal(0, 0.05)))
        rows.append(("pmodel", split, task, 0, level + 0.02))
        rows.append(("chance", split, task, 0, 0.1))
    frame = pd.DataFrame(rows, columns=["method", "split", "task_id", "sample", "accuracy"])
    return frame.assign(experiment="names", setting="names", k=10, seconds=0.01)


def test_bootstrap_resamples_within_each_group():
    groups = [np.full(5, 1.0), np.full(15, 3.0)]
    means = bootstrap_mean(groups, 200, np.random.default_rng(0))
    # every resample keeps 5 items of the first group and 15 of the second: the mean is fixed
    assert np.allclose(means, (5 * 1.0 + 15 * 3.0) / 20)
    spread = bootstrap_mean([np.arange(10.0)], 2000, np.random.default_rng(0))
    assert abs(spread.mean() - 4.5) < 0.1 and spread.std() > 0.5


def test_verdicts_need_an_interval_that_excludes_zero():
    assert verdict(0.01, 0.05) == "yes"
    assert verdict(-0.05, -0.01) == "no"
    assert verdict(-0.01, 0.05) == "not separable"


def test_claims_are_paired_per_task_with_intervals_and_verdicts():
    records = pooled({0: seed_records(0), 1: seed_records(1), 2: seed_records(2)})
    assert records["task_id"].max() >= 2 * TASK_OFFSET  # seeds' tasks never merge
    table = claims(records, rounds=1000).set_index(["split", "method"])
    assert set(table.index.get_level_values("method")) == {
        "ridge", "retrieval", "generic_selection", "pmodel",
    }  # fmt: skip
    ridge = table.loc[("test_id", "ridge")]
    assert ridge["mean"] == pytest.approx(0.05) and ridge["verdict"] == "yes"
    assert ridge["low"] == pytest.approx(0.05) and ridge["wins"] == 1.0  # no spread at all
    assert ridge["tasks"] == 45 and ridge["seeds"] == 3
    retrieval = table.loc[("test_ood", "retrieval")]
    assert retrieval["mean"] == pytest.approx(-0.05) and retrieval["verdict"] == "no"
    noisy = table.loc[("test_id", "generic_selection")]
    assert noisy["low"] < noisy["mean"] < noisy["high"]
    assert noisy["verdict"] == "not separable"  # mean 0 plus noise of 5 points over 45 tasks
    assert len(noisy["seed_means"].split()) == 3


def base_records(seed: int, n_tasks: int = 8) -> pd.DataFrame:
    """One seed's records of descriptions, unseen and image prompts: Tina 2 samples per task
    and 3 points above its base; pmodel above Tina; shot methods in image prompts."""
    rng = np.random.default_rng(seed)
    rows = []
    for experiment, settings in BASE_SETTINGS.items():
        for setting in settings:
            for task in range(n_tasks):
                level = rng.uniform(0.3, 0.7)
                methods = {"base": level - 0.03, "pmodel": level + 0.1}
                if experiment == "image_prompts":
                    methods |= {m: level - 0.02 * i for i, m in enumerate(SHOT_METHODS, 1)}
                rows += [(experiment, setting, "tina", task, s, level) for s in range(2)]
                rows += [(experiment, setting, m, task, 0, a) for m, a in methods.items()]
    columns = ["experiment", "setting", "method", "task_id", "sample", "accuracy"]
    return pd.DataFrame(rows, columns=columns).assign(split="test_ood", k=10, seconds=0.01)


def test_claims_state_tina_against_its_base_and_the_new_baselines():
    records = pooled({0: base_records(0), 1: base_records(1)})
    table = claims(records, rounds=300)
    base = table[table["method"] == "base"]
    stated = set(zip(base["experiment"], base["setting"], strict=True))
    assert stated == {(e, s) for e, settings in BASE_SETTINGS.items() for s in settings}
    assert np.allclose(base["mean"], 0.03) and (base["verdict"] == "yes").all()
    assert (base["tasks"] == 16).all() and (base["seeds"] == 2).all()
    for (experiment, _), group in table.groupby(["experiment", "setting"]):
        methods = group["method"].tolist()
        assert methods == [m for m in METHOD_ORDER if m in methods]  # the report's order
        shots = [m for m in methods if m in SHOT_METHODS]
        assert shots == (list(SHOT_METHODS) if experiment == "image_prompts" else [])
    assert "Tina's base (grounded prompt, no Tina)" in claims_markdown(table)


def test_each_claim_keeps_its_interval_when_methods_are_added():
    records = pooled({0: seed_records(0), 1: seed_records(1)})
    before = claims(records[records["method"] != "retrieval"], rounds=300)
    after = claims(records, rounds=300)
    merged = before.merge(after, on=["split", "method"], suffixes=("", "_after"))
    assert len(merged) == len(before) > 0
    assert np.allclose(merged["low"], merged["low_after"])
    assert np.allclose(merged["high"], merged["high_after"])


def test_aggregate_writes_claims_and_a_summary_with_a_runs_keys(tmp_path):
    paths = {}
    for seed in (0, 1):
        path = tmp_path / f"s{seed}.csv"
        seed_records(seed).to_csv(path, index=False)
        paths[seed] = [path]
    table = aggregate_seeds(paths, tmp_path / "tables", tmp_path / "summary.json", rounds=500)
    assert (tmp_path / "tables" / "claims.md").read_text().count("\n") == len(table) + 2
    assert (tmp_path / "tables" / "claims.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    one_run = make_summary(seed_records(0))
    assert set(one_run) <= set(summary)
    assert summary["seeds"] == [0, 1] and len(summary["claims"]) == len(table)
    low, high = summary["intervals"]["test_id"]["tina"]
    assert low <= summary["test_id"]["tina"] <= high
    assert summary["test_id"]["count"]["tina"] == 30  # 15 tasks of each seed, counted once
    assert summary["own_base"] == {}  # these seeds recorded no base


def test_aggregate_summary_pools_the_own_base_over_seeds(tmp_path):
    paths = {}
    for seed in (0, 1):
        path = tmp_path / f"s{seed}.csv"
        pd.concat([seed_records(seed), base_records(seed)]).to_csv(path, index=False)
        paths[seed] = [path]
    aggregate_seeds(paths, tmp_path / "tables", tmp_path / "summary.json", rounds=200)
    own_base = json.loads((tmp_path / "summary.json").read_text())["own_base"]
    assert set(own_base) == set(BASE_SETTINGS)
    unseen = own_base["unseen"]["unseen=5"]
    assert unseen["n"] == unseen["wins"] == 16 and unseen["mean"] == pytest.approx(0.03)


@pytest.mark.workflow
@pytest.mark.slow
def test_seeds_target_reruns_the_pipeline_per_seed_and_pools_it(tiny_run):
    """`snakemake seeds` on the tiny config: seed 0 is the finished run (nothing reruns), seed 1
    gets its own task draw, zoo, Tina and evaluation, sharing the data set; then the claims."""
    from workflow import jobs_planned, run_snakemake, tail, tiny_args

    (tiny_run / "seeds.yaml").write_text("seeds: [0, 1]\n")
    code, output = run_snakemake(tiny_run, *tiny_args("seeds"), "seeds.yaml", name="seeds")
    assert code == 0, tail(output)
    planned = jobs_planned(output)
    assert planned["prepare_data"] == planned["embed_prompts"] == 0  # shared across seeds
    assert planned["split_tasks"] == planned["train_tina"] == 1  # seed 1 only
    assert planned["scale_net"] == planned["diagnose_zoo"] == 0
    results = tiny_run / "results"
    own = pd.read_csv(results / "test-s1" / "tasks.csv")
    first = pd.read_csv(results / "test" / "tasks.csv")
    assert not own["class_ids"].equals(first["class_ids"])  # a task draw of its own
    summary = json.loads((results / "test-seeds" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    table = pd.read_csv(results / "test-seeds" / "tables" / "claims.csv")
    names = table[table["experiment"] == "names"]
    assert {"generic_selection", "ridge", "pmodel"} <= set(names["method"])
    assert (names["seeds"] == 2).all() and (names["low"] <= names["high"]).all()
    assert set(table["verdict"]) <= {"yes", "no", "not separable"}
