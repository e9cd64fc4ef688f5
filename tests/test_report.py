"""Tables, figures, performance and summary on a small fake results set."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_doctree

from tina.report.figures import FIGURE_KINDS, make_figure, order_spread, write_experiment_figure
from tina.report.performance import performance_table, stage_summary, write_performance
from tina.report.summary import make_summary, write_summary
from tina.report.tables import (
    make_tables,
    read_records,
    table_markdown,
    write_experiment_table,
    write_tables,
)

EXPERIMENTS = {
    "names": (["names"], ["test_id", "test_ood"]),
    "descriptions": (["names", "descriptions", "mixed"], ["test_id"]),
    "image_prompts": (["shots=1", "shots=4", "shots=16"], ["test_id", "test_ood"]),
    "kway": (["k=2", "k=5"], ["test_kway"]),
    "unseen": (["unseen=1", "unseen=5"], ["test_ood"]),
    "order": (["order=0", "order=1", "order=2"], ["test_id"]),
    "scaling_tasks": (["tasks=10", "tasks=100", "tasks=400"], ["test_id"]),
    "scaling_width": (["width=32", "width=64"], ["test_id"]),
    "scaling_net": (["net=cnn1k", "net=cnn5k", "net=cnn20k"], ["test_id"]),
    "sampler": (["ddim-20", "ddim-50", "ddpm-1000"], ["test_id"]),
}
METHOD_LEVELS = {"tina": 0.7, "pmodel": 0.85, "retrieval": 0.5, "ridge": 0.4, "chance": 0.1}


def fake_records(seed: int = 0, tasks: int = 4, samples: int = 3) -> pd.DataFrame:
    """Records of every experiment: Tina sampled, other methods deterministic."""
    rng = np.random.default_rng(seed)
    rows = []
    for experiment, (settings, splits) in EXPERIMENTS.items():
        for setting in settings:
            for split in splits:
                for method, level in METHOD_LEVELS.items():
                    for task in range(tasks):
                        for sample in range(samples if method == "tina" else 1):
                            noise = 0.0 if method == "chance" else rng.normal(0, 0.05)
                            seconds = {"tina": 0.02, "pmodel": 3.0}.get(method, math.nan)
                            if experiment == "sampler" and method == "tina":
                                seconds = 0.001 * float(setting.split("-")[1])
                            rows.append(
                                {
                                    "experiment": experiment,
                                    "setting": setting,
                                    "method": method,
                                    "split": split,
                                    "task_id": task,
                                    "k": 10,
                                    "sample": sample,
                                    "accuracy": float(np.clip(level + noise, 0, 1)),
                                    "seconds": seconds,
                                }
                            )
    return pd.DataFrame(rows)


def fake_novelty(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sources = ["generated"] * 8 + ["noise_sigma=0.01"] * 8 + ["noise_sigma=0.1"] * 8
    return pd.DataFrame(
        {
            "task_id": np.arange(len(sources)) % 8,
            "source": sources,
            "accuracy": rng.uniform(0.3, 0.9, len(sources)),
            "nearest_distance": rng.uniform(0.5, 3.0, len(sources)),
            "nearest_cosine": rng.uniform(0.2, 1.0, len(sources)),
            "wrong_iou": rng.uniform(0.0, 1.0, len(sources)),
        }
    )


def row(experiment: str, setting: str, method: str, split: str, task: int, sample: int, acc):
    return {
        "experiment": experiment,
        "setting": setting,
        "method": method,
        "split": split,
        "task_id": task,
        "k": 5,
        "sample": sample,
        "accuracy": acc,
        "seconds": math.nan,
    }


def known_records() -> pd.DataFrame:
    """Two tasks with hand-picked accuracies (answers worked out in the tests)."""
    tina = {0: [0.5, 0.7, 0.9], 1: [0.2, 0.6, 0.1]}
    rows = [
        row("names", "names", "tina", "test_id", t, s, a)
        for t, accs in tina.items()
        for s, a in enumerate(accs)
    ]
    rows += [row("names", "names", "pmodel", "test_id", t, 0, a) for t, a in [(0, 0.8), (1, 0.9)]]
    rows += [row("names", "names", "ridge", "test_id", t, 0, a) for t, a in [(0, 0.4), (1, 0.2)]]
    rows += [row("names", "names", "hypernetwork", "test_id", 0, 0, 0.35)]
    rows += [row("names", "names", "tina", "test_ood", t, 0, a) for t, a in [(0, 0.3), (1, 0.5)]]
    rows += [row("names", "names", "ridge", "test_ood", 0, 0, 0.1)]
    rows += [row("names", "names", "hypernetwork", "test_ood", 0, 0, 0.3)]
    rows += [row("kway", "k=2", "tina", "test_kway", 0, 0, 0.9)]
    return pd.DataFrame(rows)


def test_make_tables_known_means_and_stds():
    tables = make_tables(known_records())
    assert list(tables) == ["kway", "names"]
    names = tables["names"].set_index(["split", "method"])
    tina = names.loc[("test_id", "tina")]
    assert tina["mean"] == pytest.approx(0.5)  # task means 0.7 and 0.3
    assert tina["std"] == pytest.approx(math.sqrt(0.08))
    assert tina["count"] == 2 and tina["samples"] == 3
    assert tina["median"] == pytest.approx((0.7 + 0.2) / 2)
    assert tina["best"] == pytest.approx((0.9 + 0.6) / 2)
    pmodel = names.loc[("test_id", "pmodel")]
    assert pmodel["mean"] == pytest.approx(0.85)
    assert pmodel["std"] == pytest.approx(math.sqrt(0.005))
    assert math.isnan(pmodel["median"]) and math.isnan(pmodel["best"])
    assert math.isnan(names.loc[("test_id", "hypernetwork"), "std"])  # one task
    assert tables["names"]["method"].tolist()[:4] == ["tina", "pmodel", "ridge", "hypernetwork"]
    assert tables["names"]["split"].tolist()[0] == "test_id"


def test_tables_order_settings_naturally():
    table = make_tables(fake_records(tasks=2, samples=1))["image_prompts"]
    assert list(dict.fromkeys(table["setting"])) == ["shots=1", "shots=4", "shots=16"]


def test_write_tables_csv_and_markdown(tmp_path):
    tables = make_tables(known_records())
    paths = write_tables(tables, tmp_path)
    assert sorted(p.name for p in paths) == ["kway.csv", "kway.md", "names.csv", "names.md"]
    back = pd.read_csv(tmp_path / "names.csv")
    pd.testing.assert_frame_equal(back, tables["names"], check_dtype=False)
    markdown = (tmp_path / "names.md").read_text()
    assert markdown.startswith("# Prompts with class names")
    tina_line = next(line for line in markdown.splitlines() if "| Tina" in line)
    assert "50.0" in tina_line and "45.0" in tina_line and "75.0" in tina_line
    assert "n/a" in table_markdown(tables["names"])  # deterministic methods: no median


def test_check_records_messages():
    records = known_records()
    with pytest.raises(ValueError, match=r"lack columns \['seconds'\]"):
        make_tables(records.drop(columns="seconds"))
    records.loc[0, "accuracy"] = 70.0
    with pytest.raises(ValueError, match="fractions, not percentages"):
        make_tables(records)


def test_read_records_concatenates(tmp_path):
    records = fake_records(tasks=2, samples=1)
    paths = []
    for experiment, part in records.groupby("experiment"):
        paths.append(tmp_path / f"{experiment}.csv")
        part.to_csv(paths[-1], index=False)
    assert len(read_records(paths)) == len(records)
    with pytest.raises(FileNotFoundError, match="missing evaluation records"):
        read_records([tmp_path / "absent.csv"])


@pytest.mark.parametrize("experiment", [*EXPERIMENTS, "novelty"])
def test_every_figure_writes_png_and_svg(tmp_path, experiment):
    records = fake_novelty() if experiment == "novelty" else fake_records(tasks=3, samples=2)
    paths = make_figure(experiment, records, tmp_path / experiment)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[0].stat().st_size > 5000
    svg = paths[1].read_text()
    assert "<svg" in svg and svg.count("<path") > 10
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary files left


def test_figures_are_byte_reproducible(tmp_path):
    records = fake_records(tasks=3, samples=2)
    first = make_figure("order", records, tmp_path / "first")
    second = make_figure("order", records, tmp_path / "second")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_experiment_table_and_figure_from_record_files(tmp_path):
    """The make_tables and make_figures rules' functions: one experiment from its files."""
    records = fake_records(tasks=2, samples=2)
    order = tmp_path / "order.csv"
    records[records["experiment"] == "order"].to_csv(order, index=False)
    write_experiment_table("order", [order], tmp_path / "tables")
    table = pd.read_csv(tmp_path / "tables" / "order.csv")
    pd.testing.assert_frame_equal(table, make_tables(records)["order"], check_dtype=False)
    assert (tmp_path / "tables" / "order.md").read_text().startswith("# Sensitivity to the order")
    paths = write_experiment_figure("order", [order], tmp_path / "figures" / "order")
    assert [p.name for p in paths] == ["order.png", "order.svg"]
    with pytest.raises(ValueError, match="records are empty"):  # no rows of 'names'
        write_experiment_table("names", [order], tmp_path / "tables")

    novelty = tmp_path / "novelty.csv"
    fake_novelty().to_csv(novelty, index=False)
    write_experiment_table("novelty", [novelty], tmp_path / "tables")
    table = pd.read_csv(tmp_path / "tables" / "novelty.csv")
    assert table["source"].tolist()[0] == "generated" and table["models"].sum() == 24
    assert (tmp_path / "tables" / "novelty.md").read_text().startswith("# Novelty")
    write_experiment_figure("novelty", [novelty], tmp_path / "figures" / "novelty")
    assert (tmp_path / "figures" / "novelty.svg").is_file()


def test_figure_kinds_cover_line_and_special_experiments():
    assert FIGURE_KINDS["scaling_net"] == "lines" and FIGURE_KINDS["sampler"] == "cost"
    with pytest.raises(ValueError, match="no records of experiment 'names'"):
        make_figure("names", fake_records(tasks=2, samples=1).query("experiment == 'kway'"), "x")


def test_order_spread_is_max_minus_min():
    records = pd.DataFrame(
        [row("order", f"order={o}", "tina", "test_id", 0, 0, a) for o, a in enumerate([0.5, 0.8])]
        + [row("order", "order=0", "tina", "test_id", 1, 0, 0.4)]
    )
    spread = order_spread(records)
    assert spread["task_id"].tolist() == [0]  # task 1 was tried in one order only
    assert spread["spread"].iloc[0] == pytest.approx(0.3)


BENCHMARK_HEADER = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
)


def write_benchmark(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        BENCHMARK_HEADER
        + "".join(f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n" for s, rss in rows)
    )


def test_performance_table_parses_benchmarks(tmp_path):
    write_benchmark(tmp_path / "finetune_pmodels" / "shard-0.tsv", [(10.0, 200.5)])
    write_benchmark(tmp_path / "finetune_pmodels" / "shard-1.tsv", [(12.0, 300.0), (14.0, 250.0)])
    write_benchmark(tmp_path / "train_tina.tsv", [(100.0, 1500.0)])
    write_benchmark(tmp_path / "make_tables" / "names.tsv", [(0.2, "NA")])
    perf = performance_table(tmp_path)
    assert perf["rule"].tolist() == [
        "finetune_pmodels",
        "finetune_pmodels",
        "make_tables",
        "train_tina",
    ]
    shard1 = perf.iloc[1]
    assert shard1["job"] == "shard-1" and shard1["seconds"] == pytest.approx(13.0)
    assert shard1["max_rss_mb"] == pytest.approx(300.0) and shard1["repeats"] == 2
    assert math.isnan(perf.iloc[2]["max_rss_mb"]) and perf.iloc[3]["job"] == ""
    stages = stage_summary(perf).set_index("rule")
    assert stages.index[0] == "train_tina"
    assert stages.loc["finetune_pmodels", "seconds"] == pytest.approx(23.0)
    assert stages.loc["finetune_pmodels", "max_rss_mb"] == pytest.approx(300.0)
    assert stages.loc["finetune_pmodels", "jobs"] == 2
    names = sorted(p.name for p in write_performance(perf, tmp_path / "out"))
    assert names == ["performance.csv", "performance.md", "stages.csv", "stages.md"]


def test_performance_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        performance_table(tmp_path / "absent")
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="lacks columns"):
        performance_table(tmp_path)


def test_summary_keys_values_and_json(tmp_path):
    write_benchmark(tmp_path / "bench" / "train_tina.tsv", [(100.0, 1500.0)])
    perf = performance_table(tmp_path / "bench")
    records = fake_records(tasks=3, samples=2)
    summary = make_summary(records, perf, extra={"run": "fake"})
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary
    methods = ["tina", "pmodel", "generic_selection", "retrieval", "hypernetwork", "chance"]
    for split in ("test_id", "test_ood"):
        part = summary[split]
        for method in methods:
            assert method in part and method in part["std"] and method in part["count"]
        assert part["generic_selection"] is None and part["count"]["generic_selection"] == 0
        for method in ("tina", "pmodel", "retrieval", "hypernetwork", "chance"):
            assert 0.0 <= part[method] <= 1.0 and part["count"][method] == 3
        assert part["hypernetwork_method"] == "ridge"
        assert part["chance"] == pytest.approx(0.1)
        assert part["ratio_tina_to_pmodel"] == pytest.approx(part["tina"] / part["pmodel"])
    assert summary["seconds_per_generated_model"] == pytest.approx(0.02)
    assert summary["seconds_per_pmodel"] == pytest.approx(3.0)
    assert summary["stage_seconds"] == {"train_tina": 100.0}
    assert summary["run"] == "fake"
    write_summary(tmp_path / "summary.json", summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_summary_picks_better_regressor_and_derives_chance():
    summary = make_summary(known_records())
    assert summary["test_id"]["hypernetwork_method"] == "hypernetwork"  # 0.35 > mean(0.4, 0.2)
    assert summary["test_id"]["hypernetwork"] == pytest.approx(0.35)
    assert summary["test_id"]["std"]["hypernetwork"] is None  # one task: no std
    assert summary["test_ood"]["hypernetwork_method"] == "hypernetwork"
    assert summary["test_id"]["chance"] == pytest.approx(0.2)  # not recorded: 1/k with k=5
    assert summary["test_ood"]["pmodel"] is None
    assert summary["test_ood"]["ratio_tina_to_pmodel"] is None
    assert summary["test_id"]["ratio_tina_to_pmodel"] == pytest.approx(0.5 / 0.85)
    assert summary["seconds_per_generated_model"] is None and summary["stage_seconds"] == {}
    with pytest.raises(ValueError, match="would overwrite"):
        make_summary(known_records(), extra={"test_id": 1})


def test_summary_needs_a_single_setting():
    records = fake_records(tasks=2, samples=1)
    with pytest.raises(ValueError, match="pass setting="):
        make_summary(records, experiment="descriptions")
    summary = make_summary(records, experiment="descriptions", setting="names")
    assert summary["test_ood"]["tina"] is None and summary["test_id"]["tina"] is not None


REPORT_DIR = Path(__file__).resolve().parents[1] / "report"


def caption_for(experiment: str) -> Path:
    return REPORT_DIR / (
        "scaling.rst" if experiment.startswith("scaling_") else f"{experiment}.rst"
    )


@pytest.mark.parametrize(
    "caption",
    sorted(
        {caption_for(e) for e in [*EXPERIMENTS, "novelty"]}
        | {REPORT_DIR / f"{n}.rst" for n in ("workflow", "tables", "performance", "summary")}
    ),
    ids=lambda p: p.name,
)
def test_captions_are_clean_restructured_text(caption):
    text = caption.read_text()
    assert len(text.split()) >= 20 and "{{" not in text  # no accidental Jinja placeholders
    settings = {"report_level": 5, "halt_level": 5, "warning_stream": False}
    doctree = publish_doctree(text, settings_overrides=settings)
    warnings = [
        node.astext()
        for node in doctree.findall()
        if node.tagname == "system_message" and node["level"] >= 2
    ]
    assert warnings == []
