"""Task split invariants: disjointness, novelty of test sets, OOD content, determinism."""

import pandas as pd
import pytest
import torch

from tina.tasks import PAD, TaskDrawer, class_ids, split_tasks, task_classes

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
    ids = class_ids(tasks.iloc[:1])[0]
    assert tasks.iloc[0]["class_names"].split(";") == [f"class {i}" for i in ids]


def test_task_classes_pads_in_prompt_order_from_strings_or_lists():
    tasks = pd.DataFrame({"class_ids": ["4 0 2", [7, 1], "3"]})
    assert class_ids(tasks) == [[4, 0, 2], [7, 1], [3]]
    expected = torch.tensor([[4, 0, 2], [7, 1, PAD], [3, PAD, PAD]])
    assert torch.equal(task_classes(tasks, 3), expected)
    with pytest.raises(ValueError, match="a task has 3 classes; tasks need 1..2"):
        task_classes(tasks, 2)
    with pytest.raises(ValueError, match="repeat a class"):
        task_classes(pd.DataFrame({"class_ids": ["1 1"]}), 3)


def test_too_many_tasks_is_a_clear_error():
    section = dict(SECTION, k=5, n_train=100_000)
    with pytest.raises(ValueError, match="distinct train tasks"):
        split_tasks(make_classes((12,)), section, seed=0)


def test_ungrouped_sampling_mixes_groups():
    _, tasks = split_tasks(make_classes(), dict(SECTION, grouped=False), seed=0)
    assert set(tasks["group"]) == {"all"}


def test_fresh_tasks_are_drawn_like_training_tasks(result):
    """Fresh tasks (Tina's functional loss) hold k seen classes of one training task's group."""
    split, tasks = result
    drawer = TaskDrawer.from_tables(split, tasks)
    drawn = drawer.draw(400, torch.Generator().manual_seed(0))
    assert drawn.shape == (400, 5)
    seen = set(split.loc[split["seen"], "class_id"])
    group_of = dict(zip(split["class_id"], split["group"], strict=True))
    held_out = set(sets_of(tasks, "val") + sets_of(tasks, "test_id"))
    groups = []
    for ids in drawn.tolist():
        assert len(set(ids)) == 5 and set(ids) <= seen
        assert frozenset(ids) not in held_out
        members = {group_of[i] for i in ids}
        groups.append("pooled" if members <= {"g2", "g3"} else members.pop())
        assert len(members) <= 1 or members <= {"g2", "g3"}
    # groups come at the training tasks' rates (here g0 : g1 : pooled)
    train = tasks.loc[tasks["split"] == "train", "group"].value_counts(normalize=True)
    drawn_rates = pd.Series(groups).value_counts(normalize=True)
    for group, rate in train.items():
        assert abs(drawn_rates.get(group, 0.0) - rate) < 0.08, (group, rate, drawn_rates)
    again = drawer.draw(400, torch.Generator().manual_seed(0))
    assert torch.equal(drawn, again)


def test_fresh_tasks_never_repeat_a_held_out_set():
    """In a group of 6 classes, 5 of the 6 five-class sets are test tasks: every fresh task of
    that group is the sixth set. With every set held out, drawing is a clear error."""
    from itertools import combinations

    split = make_classes((6, 6)).assign(seen=True)
    sets = [" ".join(map(str, c)) for c in combinations(range(6, 12), 5)]
    tasks = pd.DataFrame(
        {
            "split": ["train", "train"] + ["test_id"] * 5,
            "k": 5,
            "group": ["g0"] + ["g1"] * 6,
            "class_ids": ["0 1 2 3 4"] + sets,
        }
    )
    drawer = TaskDrawer.from_tables(split, tasks)
    drawn = [frozenset(ids) for ids in drawer.draw(200, torch.Generator()).tolist()]
    of_g1 = {s for s in drawn if s <= set(range(6, 12))}
    assert of_g1 == {frozenset(range(6, 11))}  # the training task's set, sets[0]
    every_set = {frozenset(c) for c in combinations(range(6, 12), 5)}
    only_g1 = TaskDrawer(drawer.pools, drawer.task_pool[1:], 5, every_set)
    with pytest.raises(ValueError, match="held-out"):
        only_g1.draw(5, torch.Generator())


# --------------------------------------------------------------------------- superclasses
def make_superclass_classes(n_superclasses=6, per_superclass=5):
    """Classes in superclasses s0, s1, ... (CIFAR-100: 20 of 5), all in one WordNet group."""
    n = n_superclasses * per_superclass
    return pd.DataFrame(
        {
            "class_id": range(n),
            "name": [f"c{i}" for i in range(n)],
            "group": "g",
            "superclass": [f"s{i // per_superclass}" for i in range(n)],
        }
    )


SUPERCLASS_SECTION = dict(
    SECTION, grouped=False, superclasses=True, k=4, ood_unseen=[1, 4], n_train=40
)


def test_superclass_tasks_take_each_class_from_another_superclass():
    split, tasks = split_tasks(make_superclass_classes(), SUPERCLASS_SECTION, seed=0)
    # one unseen class per superclass of 5 (round(0.25 * 5) = 1): every superclass keeps 4 seen
    assert (~split["seen"]).groupby(split["superclass"]).sum().tolist() == [1] * 6
    superclass_of = dict(zip(split["class_id"], split["superclass"], strict=True))
    unseen = set(split.loc[~split["seen"], "class_id"])
    for ids, n_unseen in zip(class_ids(tasks), tasks["n_unseen"], strict=True):
        assert len({superclass_of[i] for i in ids}) == len(ids)
        assert len(set(ids) & unseen) == n_unseen
    assert set(tasks["group"]) == {"superclasses"}
    assert len(set(sets_of(tasks, "train"))) == 40
    again = split_tasks(make_superclass_classes(), SUPERCLASS_SECTION, seed=0)[1]
    pd.testing.assert_frame_equal(tasks, again)


def test_superclass_capacity_is_exact_and_its_limit_a_clear_error():
    from tina.tasks import spread_capacity

    # 3 pools of (2 seen, 1 unseen): 2 seen from 2 pools: 3 pairs x 2 x 2; 1 seen + 1 unseen
    # from two different pools: 3 x 2 ordered pool pairs x 2 x 1
    assert spread_capacity([(2, 1)] * 3, 2, 0) == 12
    assert spread_capacity([(2, 1)] * 3, 1, 1) == 12
    assert spread_capacity([(2, 1)] * 3, 4, 0) == 0
    section = dict(SUPERCLASS_SECTION, k=7)  # 7 classes from 6 superclasses
    with pytest.raises(ValueError, match="one class per superclass, 6 superclasses"):
        split_tasks(make_superclass_classes(), section, seed=0)


def test_superclasses_need_the_column_and_no_grouping():
    with pytest.raises(ValueError, match="no superclass column"):
        split_tasks(make_classes(), SUPERCLASS_SECTION, seed=0)
    with pytest.raises(ValueError, match="exclude each other"):
        split_tasks(make_superclass_classes(), dict(SUPERCLASS_SECTION, grouped=True), seed=0)


def test_fresh_tasks_of_superclass_runs_spread_over_superclasses():
    split, tasks = split_tasks(make_superclass_classes(), SUPERCLASS_SECTION, seed=0)
    drawn = TaskDrawer.from_tables(split, tasks).draw(200, torch.Generator().manual_seed(0))
    superclass_of = dict(zip(split["class_id"], split["superclass"], strict=True))
    seen = set(split.loc[split["seen"], "class_id"])
    held_out = set(sets_of(tasks, "val") + sets_of(tasks, "test_id"))
    for ids in drawn.tolist():
        assert len({superclass_of[i] for i in ids}) == 4 and set(ids) <= seen
        assert frozenset(ids) not in held_out
