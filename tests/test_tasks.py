"""Task split invariants: disjointness, novelty of test sets, OOD content, determinism."""

import pandas as pd
import pytest

from tina.tasks import class_ids, split_tasks

SECTION = {
    "k": 5,
    "unseen_fraction": 0.25,
    "grouped": True,
    "n_train": 60,
    "n_val": 8,
    "n_test_id": 10,
    "n_test_ood": 4,
    "ood_unseen": [1, 3, 5],
    "kway": [2, 3],
    "n_kway": 5,
}


def make_classes(n_per_group=(24, 16, 3, 2)):
    rows = []
    for g, n in enumerate(n_per_group):
        for _ in range(n):
            rows.append({"class_id": len(rows), "name": f"class {len(rows)}", "group": f"g{g}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def result():
    return split_tasks(make_classes(), SECTION, seed=3)


def sets_of(tasks, split):
    return [frozenset(ids) for ids in class_ids(tasks[tasks["split"] == split])]


def test_counts_and_sizes(result):
    _, tasks = result
    counts = tasks["split"].value_counts()
    assert counts["train"] == 60 and counts["val"] == 8 and counts["test_id"] == 10
    assert counts["test_ood"] == 4 * 3 and counts["test_kway"] == 5 * 2
    for ids, k in zip(class_ids(tasks), tasks["k"], strict=True):
        assert len(ids) == len(set(ids)) == k
    assert sorted(tasks.loc[tasks["split"] == "test_kway", "k"].unique()) == [2, 3]
    assert list(tasks["task_id"]) == list(range(len(tasks)))


def test_seen_unseen_disjoint_and_stratified(result):
    split, _ = result
    unseen = split[~split["seen"]]
    assert len(unseen) == round(0.25 * 24) + round(0.25 * 16) + round(0.75) + round(0.5)
    assert set(unseen["group"]) >= {"g0", "g1"}


def test_train_val_test_id_use_seen_classes_only(result):
    split, tasks = result
    unseen = set(split.loc[~split["seen"], "class_id"])
    for name in ("train", "val", "test_id", "test_kway"):
        for ids in sets_of(tasks, name):
            assert not ids & unseen, name


def test_test_sets_are_new(result):
    _, tasks = result
    seen_sets = set(sets_of(tasks, "train")) | set(sets_of(tasks, "val"))
    assert len(set(sets_of(tasks, "train"))) == 60
    assert not set(sets_of(tasks, "val")) & set(sets_of(tasks, "train"))
    assert not set(sets_of(tasks, "test_id")) & seen_sets


def test_ood_tasks_hold_the_asked_number_of_unseen_classes(result):
    split, tasks = result
    unseen = set(split.loc[~split["seen"], "class_id"])
    ood = tasks[tasks["split"] == "test_ood"]
    for ids, n in zip(class_ids(ood), ood["n_unseen"], strict=True):
        assert len(set(ids) & unseen) == n
    assert sorted(ood["n_unseen"].unique()) == [1, 3, 5]


def test_grouped_tasks_stay_in_one_group(result):
    split, tasks = result
    group_of = dict(zip(split["class_id"], split["group"], strict=True))
    train = tasks[tasks["split"] == "train"]
    for ids, group in zip(class_ids(train), train["group"], strict=True):
        groups = {group_of[i] for i in ids}
        if group == "pooled":  # small groups g2 and g3 are pooled
            assert groups <= {"g2", "g3"}
        else:
            assert groups == {group}


def test_deterministic_for_a_seed_and_different_for_another():
    a = split_tasks(make_classes(), SECTION, seed=3)[1]
    b = split_tasks(make_classes(), SECTION, seed=3)[1]
    c = split_tasks(make_classes(), SECTION, seed=4)[1]
    pd.testing.assert_frame_equal(a, b)
    assert list(a["class_ids"]) != list(c["class_ids"])


def test_names_follow_prompt_order(result):
    _, tasks = result
    row = tasks.iloc[0]
    ids = [int(i) for i in row["class_ids"].split()]
    assert row["class_names"].split(";") == [f"class {i}" for i in ids]


def test_too_many_tasks_is_a_clear_error():
    section = dict(SECTION, k=5, n_train=100_000)
    with pytest.raises(ValueError, match="distinct train tasks"):
        split_tasks(make_classes((12,)), section, seed=0)


def test_ungrouped_sampling_mixes_groups():
    _, tasks = split_tasks(make_classes(), dict(SECTION, grouped=False), seed=0)
    assert set(tasks["group"]) == {"all"}
