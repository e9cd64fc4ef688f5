"""Tables, figures, performance and summary on a small fake results set."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_doctree
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from tina.report.figures import (
    FIGURE_KINDS,
    _draw_bars,
    _draw_lines,
    make_figure,
    order_spread,
    write_experiment_figure,
)
from tina.report.performance import performance_table, stage_summary, write_performance
from tina.report.style import (
    METHOD_LABELS,
    METHOD_ORDER,
    METHOD_PALETTE_INDEX,
    method_colour,
    method_label,
)
from tina.report.summary import make_summary, write_run_summary, write_summary
from tina.report.tables import (
    OWN_BASE_COLUMNS,
    make_tables,
    own_base_markdown,
    own_base_table,
    read_records,
    table_markdown,
    write_experiment_table,
    write_own_base,
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


#: The methods recorded beside Tina by experiment, once the evaluation records Tina's own base
#: (``base``) and the image-prompt baselines.
NEW_METHODS = {
    "names": {"base": 0.6},
    "descriptions": {"base": 0.65},
    "image_prompts": {
        "base": 0.55,
        "imprint": 0.5,
        "imprint_selection": 0.52,
        "logistic_head": 0.6,
        "finetune_shots": 0.62,
    },
    "kway": {"base": 0.75},
    "unseen": {"base": 0.5},
}


def with_new_methods(records: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``records`` plus one deterministic row per task of every method of ``NEW_METHODS``."""
    rng = np.random.default_rng(seed)
    tasks = records[records["method"] == "tina"].drop_duplicates(
        ["experiment", "setting", "split", "task_id"]
    )
    rows = []
    for task in tasks.itertuples(index=False):
        for method, level in NEW_METHODS.get(task.experiment, {}).items():
            accuracy = float(np.clip(level + rng.normal(0, 0.05), 0, 1))
            rows.append(task._asdict() | {"method": method, "sample": 0, "accuracy": accuracy})
    return pd.concat([records, pd.DataFrame(rows)], ignore_index=True)


def own_base_records() -> pd.DataFrame:
    """Tina and its base on hand-picked tasks (answers worked out in the tests; every value is
    exact in binary, so the tie is a tie)."""
    tina = {0: [0.5, 0.75], 1: [0.25, 0.25], 2: [0.5, 1.0]}  # task means 0.625, 0.25, 0.75
    base = {0: 0.5, 1: 0.375, 2: 0.75}  # differences +0.125, -0.125, 0 (a tie is not a win)
    rows = [
        row("unseen", "unseen=1", "tina", "test_ood", t, s, a)
        for t, accs in tina.items()
        for s, a in enumerate(accs)
    ]
    rows += [row("unseen", "unseen=1", "base", "test_ood", t, 0, a) for t, a in base.items()]
    rows += [row("unseen", "unseen=1", "pmodel", "test_ood", t, 0, 0.9) for t in base]
    rows += [row("names", "names", "tina", split, 5, 0, 0.75) for split in ("test_id", "test_ood")]
    rows += [row("names", "names", "base", "test_id", 5, 0, 0.5)]  # +0.25
    rows += [row("names", "names", "base", "test_ood", 5, 0, 0.25)]  # +0.5
    rows += [row("names", "names", "base", "test_ood", 6, 0, 0.25)]  # no Tina on task 6
    rows += [row("kway", "k=2", "tina", "test_kway", 0, 0, 0.9)]  # no base in k-way
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


def test_style_knows_every_method_and_each_experiment_tells_its_methods_apart():
    assert set(METHOD_LABELS) == set(METHOD_PALETTE_INDEX) == set(METHOD_ORDER)
    position = METHOD_ORDER.index
    assert position("generic_selection") + 1 == position("base")
    assert position("finetune_shots") + 1 == position("retrieval")
    assert method_label("base") == "Tina's base (grounded prompt, no Tina)"
    assert method_label("finetune_shots") == "fine-tuning on the shots"
    assert [m for m, index in METHOD_PALETTE_INDEX.items() if index is None] == ["majority"]
    named = ["tina", "pmodel", "generic_selection", "base", "retrieval", "ridge", "hypernetwork"]
    images = ["tina", "pmodel", "generic_selection", *NEW_METHODS["image_prompts"]]
    for methods in ([*named, "chance", "majority"], images):
        assert len({method_colour(m) for m in methods}) == len(methods), methods


def test_tables_place_the_new_methods_in_method_order():
    records = with_new_methods(fake_records(tasks=2, samples=2))
    tables = make_tables(records)
    image = tables["image_prompts"]
    methods = list(dict.fromkeys(image["method"]))
    assert methods == [
        "tina", "pmodel", "base", "imprint", "imprint_selection", "logistic_head",
        "finetune_shots", "retrieval", "ridge", "chance",
    ]  # fmt: skip
    assert (image.loc[image["method"] == "base", "samples"] == 1).all()
    assert "base" in set(tables["descriptions"]["method"]) and "imprint" not in set(
        tables["unseen"]["method"]
    )
    assert "Tina's base (grounded prompt, no Tina)" in table_markdown(tables["unseen"])


def test_own_base_pairs_tina_sample_means_with_the_base_per_task():
    table = own_base_table(own_base_records())
    assert list(table.columns) == list(OWN_BASE_COLUMNS)
    assert table[["experiment", "setting", "split"]].values.tolist() == [
        ["names", "names", "test_id"],
        ["names", "names", "test_ood"],
        ["names", "names", "all"],
        ["unseen", "unseen=1", "test_ood"],
    ]  # no k-way row: k-way recorded no base
    unseen = table.iloc[3]
    assert unseen["mean"] == pytest.approx(0.0) and unseen["std"] == pytest.approx(0.125)
    assert unseen["wins"] == 1 and unseen["tasks"] == 3  # the tie is no win
    assert unseen["share"] == pytest.approx(1 / 3)
    names = table[table["experiment"] == "names"].set_index("split")
    assert names.loc["test_id", "mean"] == pytest.approx(0.25)
    assert math.isnan(names.loc["test_id", "std"])  # one task
    assert names.loc["test_ood", "mean"] == pytest.approx(0.5)
    assert names.loc["test_ood", "tasks"] == 1  # task 6 has no Tina: unpaired, left out
    pooled = names.loc["all"]
    assert pooled["mean"] == pytest.approx(0.375) and pooled["std"] == pytest.approx(0.125 * 2**0.5)
    assert pooled["wins"] == pooled["tasks"] == 2 and pooled["share"] == 1.0


def test_own_base_table_files_and_markdown(tmp_path):
    table = write_own_base(own_base_records(), tmp_path)
    back = pd.read_csv(tmp_path / "own_base.csv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    markdown = (tmp_path / "own_base.md").read_text()
    assert markdown.startswith("# Tina against its own base")
    assert "grounded prompt with no Tina" in markdown and "Positive means Tina adds" in markdown
    unseen = next(line for line in markdown.splitlines() if "unseen=1" in line)
    assert "+0.0" in unseen and "12.5" in unseen and "33" in unseen
    assert "+25.0" in markdown and "n/a" in markdown  # names, test-ID: one task, no std

    empty = write_own_base(known_records(), tmp_path / "none")  # no base recorded
    assert empty.empty and list(pd.read_csv(tmp_path / "none" / "own_base.csv").columns) == list(
        OWN_BASE_COLUMNS
    )
    assert "No experiment recorded both" in own_base_markdown(empty)


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


def legend_entries(figure) -> list[tuple[str, tuple]]:
    """The method legend of a figure: (label, RGB colour) per entry."""
    legend = figure.legends[0]
    colours = [
        to_rgb(h.get_color() if isinstance(h, Line2D) else h.get_facecolor())
        for h in legend.legend_handles
    ]
    labels = [text.get_text() for text in legend.get_texts()]
    return list(zip(labels, colours, strict=True))


def test_figures_show_the_new_baselines_in_their_colours(tmp_path):
    records = with_new_methods(fake_records(tasks=2, samples=2))
    image = records[records["experiment"] == "image_prompts"]
    unseen = records[records["experiment"] == "unseen"]
    assert set(NEW_METHODS["image_prompts"]) <= set(image["method"])
    drawn = [(_draw_lines(image, "image_prompts"), image), (_draw_bars(unseen, "unseen"), unseen)]
    for figure, frame in drawn:
        methods = [m for m in METHOD_ORDER if m in set(frame["method"])]
        expected = [(method_label(m), to_rgb(method_colour(m))) for m in methods]
        assert legend_entries(figure) == expected
    paths = make_figure("image_prompts", records, tmp_path / "image_prompts")
    assert paths[0].stat().st_size > 5000


def test_figures_are_byte_reproducible(tmp_path):
    records = fake_records(tasks=3, samples=2)
    first = make_figure("order", records, tmp_path / "first")
    second = make_figure("order", records, tmp_path / "second")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_experiment_table_and_figure_from_record_files(tmp_path):
    """The make_report rule's functions: one experiment from its files."""
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


def test_summary_states_tina_against_its_own_base():
    summary = make_summary(own_base_records())
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert set(summary["own_base"]) == {"names", "unseen"}
    unseen = summary["own_base"]["unseen"]["unseen=1"]
    assert unseen["mean"] == pytest.approx(0.0) and unseen["std"] == pytest.approx(0.125)
    assert (unseen["wins"], unseen["n"]) == (1, 3) and unseen["share"] == pytest.approx(1 / 3)
    assert list(unseen["splits"]) == ["test_ood"]
    names = summary["own_base"]["names"]["names"]
    assert names["mean"] == pytest.approx(0.375) and (names["wins"], names["n"]) == (2, 2)
    assert list(names["splits"]) == ["test_id", "test_ood"]
    assert names["splits"]["test_id"]["std"] is None  # one task
    assert names["splits"]["test_ood"]["mean"] == pytest.approx(0.5)
    assert summary["test_id"]["base"] == pytest.approx(0.5)
    assert summary["test_id"]["count"]["base"] == 1
    assert make_summary(known_records())["own_base"] == {}  # no base recorded
    assert make_summary(known_records())["test_id"]["base"] is None


def test_run_summary_writes_the_own_base_table_and_digest(tmp_path):
    records = with_new_methods(fake_records(tasks=3, samples=2))
    paths = []
    for experiment, part in records.groupby("experiment"):
        paths.append(tmp_path / "eval" / f"{experiment}.csv")
        paths[-1].parent.mkdir(exist_ok=True)
        part.to_csv(paths[-1], index=False)
    write_benchmark(tmp_path / "bench" / "train_tina.tsv", [(100.0, 1500.0)])
    summary = write_run_summary(
        paths,
        novelty_path=None,
        benchmark_dir=tmp_path / "bench",
        tables_dir=tmp_path / "tables",
        summary_path=tmp_path / "summary.json",
        results_path=tmp_path / "results.md",
        run="fake",
    )
    table = pd.read_csv(tmp_path / "tables" / "own_base.csv")
    assert set(table["experiment"]) == set(NEW_METHODS)
    image = table[table["experiment"] == "image_prompts"]
    assert set(image["setting"]) == {"shots=1", "shots=4", "shots=16"}
    assert (table["tasks"] == np.where(table["split"] == "all", 6, 3)).all()
    assert set(summary["own_base"]) == set(NEW_METHODS)
    assert set(summary["own_base"]["descriptions"]) == {"names", "descriptions", "mixed"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    digest = (tmp_path / "results.md").read_text()
    own = digest.index("## Tina against its own base")
    assert digest.index("## Main result") < own < digest.index("## Experiments")
    assert (tmp_path / "tables" / "own_base.md").read_text().startswith("# Tina against")


REPORT_DIR = Path(__file__).resolve().parents[1] / "report"


def caption_for(experiment: str) -> Path:
    return REPORT_DIR / (
        "scaling.rst" if experiment.startswith("scaling_") else f"{experiment}.rst"
    )


@pytest.mark.parametrize(
    "caption",
    sorted(
        {caption_for(e) for e in [*EXPERIMENTS, "novelty"]}
        | {
            REPORT_DIR / f"{n}.rst"
            for n in ("workflow", "tables", "performance", "summary", "own_base")
        }
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
