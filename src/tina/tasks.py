"""Class splits and task lists.

A *task* is an ordered list of class ids: the order is the prompt order, and head row ``j`` of
the task's classifier belongs to its ``j``-th class. Classes are split once into *seen* classes
(the only ones any training or validation task contains) and *unseen* classes (held out for
out-of-distribution tests). Splits written to the task table:

- ``train``: k-way tasks of seen classes (the zoo that Tina learns from);
- ``val``: k-way tasks of seen classes, used to select Tina checkpoints;
- ``test_id``: k-way tasks of seen classes whose class SET is no train or val task's set;
- ``test_ood``: k-way tasks with a given number of unseen classes (column ``n_unseen``);
- ``test_kway``: k'-way tasks of seen classes for each k' < k (the padding experiment).

With ``grouped`` on, each task is drawn from one group of related classes (the WordNet
lexicographer file, e.g. ``noun.animal``), as a user interested in animals would ask for; groups
with fewer classes than a task needs are pooled together. With ``superclasses`` on, each task
takes its k classes from k different superclasses (the class table's ``superclass`` column:
CIFAR-100's coarse labels), as the authors' personalisation code draws CIFAR-100 tasks; the
unseen classes are then drawn per superclass, so every superclass keeps seen classes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

log = logging.getLogger("tina.tasks")

SPLITS = ("train", "val", "test_id", "test_ood", "test_kway")
PAD = -1
"""Class id of an empty slot in a task with fewer than k classes."""
POOLED_GROUP = "pooled"
ALL_CLASSES = "all"
SUPERCLASSES = "superclasses"
"""The ``group`` of a task drawn one class per superclass."""


@dataclass(frozen=True)
class TaskConfig:
    """The ``tasks`` section of the config."""

    k: int
    unseen_fraction: float
    grouped: bool
    n_train: int
    n_val: int
    n_test_id: int
    n_test_ood: int
    ood_unseen: tuple[int, ...]
    kway: tuple[int, ...]
    n_kway: int
    superclasses: bool = False

    @classmethod
    def from_config(cls, section: dict) -> TaskConfig:
        fields = {name: section[name] for name in cls.__dataclass_fields__ if name in section}
        fields["ood_unseen"] = tuple(fields["ood_unseen"])
        fields["kway"] = tuple(fields["kway"])
        return cls(**fields)


def split_classes(
    classes: pd.DataFrame, unseen_fraction: float, seed: int, by: str = "group"
) -> pd.DataFrame:
    """Mark each class seen or unseen, stratified by column ``by`` (``group`` or
    ``superclass``) so every group keeps seen classes; a ``superclass`` column is kept."""
    rng = np.random.default_rng([seed, 1])
    unseen: set[int] = set()
    for _, members in sorted(classes.groupby(by)["class_id"]):
        ids = rng.permutation(members.to_numpy())
        unseen.update(int(i) for i in ids[: int(round(unseen_fraction * len(ids)))])
    kept = ["class_id", "name", "group"] + [c for c in ("superclass",) if c in classes.columns]
    table = classes[kept].copy()
    table["seen"] = ~table["class_id"].isin(unseen)
    return table


def _pools(split: pd.DataFrame, grouped: bool, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Group name -> (seen ids, unseen ids); groups with fewer than k seen classes are pooled."""
    if not grouped:
        return {ALL_CLASSES: _seen_unseen(split)}
    pools, small = {}, []
    for group, members in sorted(split.groupby("group")):
        pools[group] = _seen_unseen(members)
        if len(pools[group][0]) < k:
            small.append(group)
    for group in small:
        del pools[group]
    if small:
        pools[POOLED_GROUP] = _seen_unseen(split[split["group"].isin(small)])
    return pools


def superclass_pools(split: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Superclass -> (seen ids, unseen ids) of a class split with a ``superclass`` column."""
    return {name: _seen_unseen(members) for name, members in sorted(split.groupby("superclass"))}


def spread_capacity(pools: list[tuple[int, int]], n_seen: int, n_unseen: int) -> int:
    """Class sets of ``n_seen`` seen and ``n_unseen`` unseen classes, each from another pool,
    given each pool's ``(seen, unseen)`` counts (the coefficient of ``x^n_seen y^n_unseen`` in
    the product of ``1 + seen x + unseen y`` over the pools)."""
    ways = [[0] * (n_unseen + 1) for _ in range(n_seen + 1)]
    ways[0][0] = 1
    for seen, unseen in pools:
        for i in range(n_seen, -1, -1):
            for j in range(n_unseen, -1, -1):
                ways[i][j] += (seen * ways[i - 1][j] if i else 0) + (
                    unseen * ways[i][j - 1] if j else 0
                )
    return ways[n_seen][n_unseen]


def _seen_unseen(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ids = frame["class_id"].to_numpy()
    seen = frame["seen"].to_numpy()
    return np.sort(ids[seen]), np.sort(ids[~seen])


class _Sampler:
    """Draws unique ordered tasks (unique by class set across all splits that share ``taken``)."""

    def __init__(self, pools, everything, rng: np.random.Generator, taken: set[frozenset]):
        self.pools = pools
        self.everything = everything
        self.rng = rng
        self.taken = taken

    def draw(self, n: int, k: int, n_unseen: int, label: str) -> list[tuple[str, list[int]]]:
        n_seen = k - n_unseen
        names = [
            g
            for g, (seen, unseen) in self.pools.items()
            if len(seen) >= n_seen and len(unseen) >= n_unseen
        ]
        if not names and ALL_CLASSES in self.pools:
            raise ValueError(
                f"cannot draw {label} tasks: they need {n_seen} seen and {n_unseen} unseen "
                f"classes, but there are only {len(self.everything[0])} seen and "
                f"{len(self.everything[1])} unseen; lower tasks.k or tasks.ood_unseen"
            )
        if not names:  # no single group is large enough: draw across all classes
            everything = {ALL_CLASSES: self.everything}
            return _Sampler(everything, self.everything, self.rng, self.taken).draw(
                n, k, n_unseen, label
            )
        capacity = sum(
            math.comb(len(self.pools[g][0]), n_seen) * math.comb(len(self.pools[g][1]), n_unseen)
            for g in names
        )
        weights = np.array([len(self.pools[g][0]) + len(self.pools[g][1]) for g in names], float)
        weights /= weights.sum()

        def one() -> tuple[str, list]:
            group = names[self.rng.choice(len(names), p=weights)]
            seen, unseen = self.pools[group]
            return group, list(self.rng.choice(seen, n_seen, replace=False)) + list(
                self.rng.choice(unseen, n_unseen, replace=False)
            )

        return self._unique(n, label, capacity, one)

    def _unique(self, n: int, label: str, capacity: int, one) -> list[tuple[str, list[int]]]:
        """``n`` tasks ``one()`` draws (``(group, classes)``, classes None for a failed draw)
        whose class sets no task of any split has, each in a random order."""
        too_many = ValueError(
            f"cannot draw {n} distinct {label} tasks: only {capacity} class sets of that kind "
            "exist, some already taken by other splits; lower the number of tasks or add classes"
        )
        if n > capacity:
            raise too_many
        tasks: list[tuple[str, list[int]]] = []
        attempts = 0
        while len(tasks) < n:
            attempts += 1
            if attempts > 50 * n + 1000:  # random draws keep colliding: the sets are nearly used up
                raise too_many
            group, classes = one()
            if classes is None:
                continue
            key = frozenset(int(c) for c in classes)
            if key in self.taken:
                continue
            self.taken.add(key)
            tasks.append((group, [int(c) for c in self.rng.permutation(classes)]))
        return tasks


class _SuperclassSampler(_Sampler):
    """Draws unique tasks whose classes come from different superclasses (the pools)."""

    def draw(self, n: int, k: int, n_unseen: int, label: str) -> list[tuple[str, list[int]]]:
        n_seen = k - n_unseen
        counts = [(len(seen), len(unseen)) for seen, unseen in self.pools.values()]
        capacity = spread_capacity(counts, n_seen, n_unseen)
        label = f"{label} (one class per superclass, {len(self.pools)} superclasses)"
        return self._unique(n, label, capacity, lambda: (SUPERCLASSES, self._one(n_seen, n_unseen)))

    def _one(self, n_seen: int, n_unseen: int) -> list | None:
        """One class from each of ``n_unseen`` superclasses' unseen classes and of ``n_seen``
        other superclasses' seen classes (None when the superclasses left are too few)."""
        names = list(self.pools)
        with_unseen = [g for g in names if len(self.pools[g][1])]
        if len(with_unseen) < n_unseen:
            return None
        for_unseen = list(self.rng.choice(with_unseen, n_unseen, replace=False))
        with_seen = [g for g in names if g not in for_unseen and len(self.pools[g][0])]
        if len(with_seen) < n_seen:
            return None
        for_seen = list(self.rng.choice(with_seen, n_seen, replace=False))
        seen = [self.rng.choice(self.pools[g][0]) for g in for_seen]
        return seen + [self.rng.choice(self.pools[g][1]) for g in for_unseen]


def _sampler(split: pd.DataFrame, cfg: TaskConfig, rng: np.random.Generator) -> _Sampler:
    """The task sampler of ``cfg``: one class per superclass, one group, or any classes."""
    if cfg.superclasses:
        return _SuperclassSampler(superclass_pools(split), _seen_unseen(split), rng, taken=set())
    return _Sampler(_pools(split, cfg.grouped, cfg.k), _seen_unseen(split), rng, taken=set())


def make_tasks(split: pd.DataFrame, cfg: TaskConfig, seed: int) -> pd.DataFrame:
    """Sample every split's tasks from a class split (see :func:`split_classes`)."""
    names = dict(zip(split["class_id"], split["name"], strict=True))
    rng = np.random.default_rng([seed, 2])
    sampler = _sampler(split, cfg, rng)
    rows = []

    def add(split_name: str, drawn, n_unseen: int):
        for group, ids in drawn:
            rows.append(
                {
                    "split": split_name,
                    "k": len(ids),
                    "n_unseen": n_unseen,
                    "group": group,
                    "class_ids": " ".join(map(str, ids)),
                    "class_names": ";".join(names[i] for i in ids),
                }
            )

    add("train", sampler.draw(cfg.n_train, cfg.k, 0, "train"), 0)
    add("val", sampler.draw(cfg.n_val, cfg.k, 0, "val"), 0)
    add("test_id", sampler.draw(cfg.n_test_id, cfg.k, 0, "test_id"), 0)
    for n_unseen in cfg.ood_unseen:
        add("test_ood", sampler.draw(cfg.n_test_ood, cfg.k, n_unseen, "test_ood"), n_unseen)
    for k in cfg.kway:
        add("test_kway", sampler.draw(cfg.n_kway, k, 0, f"{k}-way"), 0)
    tasks = pd.DataFrame(rows)
    tasks.insert(0, "task_id", np.arange(len(tasks)))
    return tasks


def split_tasks(
    classes: pd.DataFrame, section: dict, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Class split and task table for the ``tasks`` config section."""
    cfg = TaskConfig.from_config(section)
    if cfg.superclasses and cfg.grouped:
        raise ValueError(
            "tasks.superclasses and tasks.grouped exclude each other: set grouped: false"
        )
    if cfg.superclasses and "superclass" not in classes.columns:
        raise ValueError(
            "tasks.superclasses needs a data set with superclasses (CIFAR-100's coarse labels), "
            "but the class table has no superclass column: set tasks.superclasses: false, or "
            "prepare cifar100 from files with coarse_labels"
        )
    by = "superclass" if cfg.superclasses else "group"
    split = split_classes(classes, cfg.unseen_fraction, seed, by)
    tasks = make_tasks(split, cfg, seed)
    counts = tasks["split"].value_counts().to_dict()
    log.info(
        "split %d classes into %d seen / %d unseen; tasks per split: %s",
        len(split),
        int(split["seen"].sum()),
        int((~split["seen"]).sum()),
        counts,
    )
    return split, tasks


def class_ids(tasks: pd.DataFrame) -> list[list[int]]:
    """The ordered class ids of every task row.

    ``tasks["class_ids"]`` holds space-separated strings (the task table) or lists of ints.
    """
    return [
        [int(c) for c in (value.split() if isinstance(value, str) else value)]
        for value in tasks["class_ids"]
    ]


def task_classes(tasks: pd.DataFrame, k: int) -> torch.Tensor:
    """Class ids ``[T, k]`` of every task in prompt order, padded with ``PAD``."""
    rows = []
    for ids in class_ids(tasks):
        if not 1 <= len(ids) <= k:
            raise ValueError(f"a task has {len(ids)} classes; tasks need 1..{k} (k of the net)")
        if len(set(ids)) < len(ids) or min(ids) < 0:
            raise ValueError(f"task classes {ids} repeat a class or hold a negative id")
        rows.append(ids + [PAD] * (k - len(ids)))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), k)


def read_tasks(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


class TaskDrawer:
    """Draws fresh k-class tasks of seen classes the way the training tasks were drawn.

    Each draw picks a training task at random and draws k seen classes of its group (groups
    pooled as in :func:`make_tasks`), so groups come at the training tasks' rates; when the
    training tasks were drawn one class per superclass (``spread``), each draw takes one seen
    class from each of k random superclasses. A class set of a validation or test task is never
    drawn. Tina's functional loss trains on these tasks: they need no p-model, only the training
    images of their classes.
    """

    def __init__(
        self, pools: list[torch.Tensor], task_pool: torch.Tensor, k: int, held_out,
        spread: bool = False,
    ):  # fmt: skip
        self.pools = pools
        self.task_pool = task_pool
        self.k = k
        self.held_out = held_out
        self.spread = spread

    @classmethod
    def from_tables(cls, split: pd.DataFrame, tasks: pd.DataFrame) -> TaskDrawer:
        """From the class split and the task table (:func:`split_tasks`)."""
        train = tasks[tasks["split"] == "train"]
        k = int(train["k"].max())
        held_out = {frozenset(ids) for ids in class_ids(tasks[tasks["split"] != "train"])}
        if (train["group"] == SUPERCLASSES).all():
            seen = [torch.as_tensor(s) for s, _ in superclass_pools(split).values() if len(s)]
            return cls(seen, torch.zeros(0, dtype=torch.long), k, held_out, spread=True)
        grouped = bool((train["group"] != ALL_CLASSES).any())
        pools = _pools(split, grouped, k)
        pools.setdefault(ALL_CLASSES, _seen_unseen(split))  # tasks drawn across every group
        names = sorted(pools)
        index = {name: i for i, name in enumerate(names)}
        task_pool = torch.tensor([index[g] for g in train["group"]])
        return cls([torch.as_tensor(pools[n][0]) for n in names], task_pool, k, held_out)

    def _one(self, generator: torch.Generator) -> torch.Tensor:
        """``[k]`` class ids of one draw (possibly a held-out set)."""
        if self.spread:
            chosen = torch.randperm(len(self.pools), generator=generator)[: self.k].tolist()
            picks = [torch.randint(len(self.pools[i]), (1,), generator=generator) for i in chosen]
            return torch.cat([self.pools[i][pick] for i, pick in zip(chosen, picks, strict=True)])
        pick = torch.randint(len(self.task_pool), (1,), generator=generator)
        pool = self.pools[int(self.task_pool[pick])]
        return pool[torch.randperm(len(pool), generator=generator)[: self.k]]

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``[n, k]`` class ids of ``n`` fresh tasks, in random order."""
        tasks: list[torch.Tensor] = []
        attempts = 0
        while len(tasks) < n:
            attempts += 1
            if attempts > 50 * n + 100:
                raise ValueError(
                    "cannot draw fresh tasks: nearly every class set is a held-out task's"
                )
            ids = self._one(generator)
            if frozenset(ids.tolist()) not in self.held_out:
                tasks.append(ids)
        return torch.stack(tasks)
