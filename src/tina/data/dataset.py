"""The data set API: prepare a data set, save and load it, check its resources.

Every data set comes out the same way: RGB uint8 images at ``image_size`` x ``image_size``,
int64 labels 0..C-1 and a class table whose ``name`` is the text prompt of the class and
whose ``group`` and ``description`` come from WordNet 3.0 (first noun sense).

Each class's images come in three sets: *training* images (the generic model, the zoo, Tina's
functional loss and the baselines learn from them), *validation* images (a seeded share of the
loader's training images, held out of every training: every choice made on validation tasks
scores on them) and *test* images (only ever scored).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tina.data.loading import VAL_STREAM, LoadRequest, prompt_name
from tina.data.openmoji import load_openmoji, openmoji_font
from tina.data.readers import (
    load_caltech101,
    load_cifar100,
    load_fashion_mnist,
    load_medmnist_npz,
    load_tiny_imagenet,
)
from tina.data.sources import CHECKS, DOWNLOADS, download_dataset, require_root, resolve_root
from tina.io import load_tensors, save_tensors, write_csv
from tina.seeding import stream_generator
from tina.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from tina.wordnet import WordNet, check_root

log = logging.getLogger("tina.data")

DATASETS = ("openmoji", "fashion_mnist", "cifar100", "caltech101", "tiny_imagenet", "medmnist_npz")
AUGMENT_LEVELS = ("none", "mild", "strong")
CLASS_COLUMNS = ("class_id", "name", "source", "group", "description")
SUPERCLASS_COLUMN = "superclass"  # in the class table of data sets with superclasses (CIFAR-100)
# The tensors of a data set file: images and labels of each image set.
TENSORS = tuple(f"{s}_{kind}" for s in ("train", "val", "test") for kind in ("images", "labels"))

_LOADERS = {  # dataset -> loader
    "openmoji": load_openmoji,
    "fashion_mnist": load_fashion_mnist,
    "cifar100": load_cifar100,
    "caltech101": load_caltech101,
    "tiny_imagenet": load_tiny_imagenet,
    "medmnist_npz": load_medmnist_npz,
}


@dataclass
class Dataset:
    """Images, labels and the class table of one prepared data set."""

    train_images: torch.Tensor  # uint8 [N, 3, H, W]
    train_labels: torch.Tensor  # int64 [N], values in 0..C-1
    val_images: torch.Tensor  # uint8 [V, 3, H, W], held out of every training
    val_labels: torch.Tensor  # int64 [V]
    test_images: torch.Tensor  # uint8 [M, 3, H, W]
    test_labels: torch.Tensor  # int64 [M]
    classes: pd.DataFrame  # class_id, name, source, group, description (, superclass)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def scoring_images(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels that score tasks of ``split``: validation tasks score on the
        validation images, every other task on the test images."""
        if split == "val":
            return self.val_images, self.val_labels
        return self.test_images, self.test_labels


# ---------------------------------------------------------------------------------------------
# Public API


def prepare_dataset(
    dataset: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int = 16,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_fraction: float = 0.2,
    augment: str = "strong",
    seed: int = 0,
    max_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    descriptions: str | Path | None = None,
    wordnet_root: str | Path = WORDNET_ROOT,
) -> Dataset:
    """Render or load ``dataset`` as RGB uint8 images of ``image_size`` pixels.

    ``train_per_class``/``test_per_class``: images per class (None: all the data set has; for
    openmoji, which renders its images, None means 60 and 30). ``val_fraction`` of each class's
    training images become its validation images (seeded). ``max_classes`` keeps the first
    classes. ``class_names`` replaces the data set's names in label order (``.npz`` files carry
    none; the default is OrganAMNIST's). ``descriptions`` is a CSV (name, description) that
    overrides WordNet glosses. ``augment`` applies to openmoji renders only.
    """
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}, not {augment!r}")
    for name, value in (("image_size", image_size), ("max_classes", max_classes)):
        if value is not None and value < 2:
            raise ValueError(f"{name} must be at least 2, not {value}")
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), not {val_fraction}")
    if download:
        download_dataset(dataset, resolve_root(dataset, root))
    check_resources(dataset, root, download=False, wordnet_root=wordnet_root)
    request = LoadRequest(
        root=resolve_root(dataset, root),
        image_size=image_size,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        augment=augment,
        seed=seed,
        max_classes=max_classes,
        class_names=None if class_names is None else tuple(class_names),
        wordnet=WordNet(wordnet_root),
    )
    loaded = _LOADERS[dataset](request)
    names = _class_names(loaded.names, class_names, dataset)
    n_kept = len(names) if max_classes is None else min(max_classes, len(names))
    classes = _class_table(names[:n_kept], loaded.sources[:n_kept], request.wordnet, descriptions)
    if loaded.superclasses is not None:
        classes[SUPERCLASS_COLUMN] = loaded.superclasses[:n_kept]
    train, val = split_validation(loaded.train_labels, val_fraction, seed)
    result = Dataset(
        train_images=loaded.train_images[train],
        train_labels=loaded.train_labels[train],
        val_images=loaded.train_images[val],
        val_labels=loaded.train_labels[val],
        test_images=loaded.test_images,
        test_labels=loaded.test_labels,
        classes=classes,
    )
    log.info(
        "%s: %d classes, %d train, %d validation and %d test images at %dx%d",
        dataset,
        n_kept,
        len(result.train_labels),
        len(result.val_labels),
        len(result.test_labels),
        image_size,
        image_size,
    )
    return result


def split_validation(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted indices ``(train, val)`` of a seeded ``fraction`` of each class's items held out
    for validation: round(fraction * n) of a class's n items, at least one, and at least one
    left for training (a class with a single item keeps it for training)."""
    generator = stream_generator(seed, VAL_STREAM)
    val = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        n_val = min(max(1, round(fraction * len(members))), len(members) - 1)
        val.append(members[torch.randperm(len(members), generator=generator)[:n_val]])
    val = torch.sort(torch.cat(val)).values if val else torch.zeros(0, dtype=torch.long)
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[val] = True
    return torch.nonzero(~held).flatten(), val


def save_dataset(ds: Dataset, tensors_path: str | Path, classes_path: str | Path) -> None:
    """Write the images and labels (safetensors) and the class table (CSV), atomically; the
    table has a ``superclass`` column where the data set has superclasses."""
    save_tensors(tensors_path, {name: getattr(ds, name) for name in TENSORS})
    extra = [SUPERCLASS_COLUMN] if SUPERCLASS_COLUMN in ds.classes.columns else []
    write_csv(classes_path, ds.classes.loc[:, list(CLASS_COLUMNS) + extra])


def load_dataset(tensors_path: str | Path, classes_path: str | Path) -> Dataset:
    """Read a data set written by :func:`save_dataset`."""
    tensors = load_tensors(tensors_path)
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise ValueError(
            f"{tensors_path} lacks {', '.join(missing)} (written by an older version, before "
            "validation images were held out): delete it and rerun prepare_data"
        )
    classes = pd.read_csv(
        classes_path,
        dtype={
            "class_id": "int64",
            "name": str,
            "source": str,
            "group": str,
            "description": str,
            SUPERCLASS_COLUMN: str,
        },  # fmt: skip
        keep_default_na=False,
    )
    return Dataset(classes=classes, **tensors)


def check_resources(
    dataset: str,
    root: str | Path | None = None,
    download: bool = False,
    wordnet_root: str | Path = WORDNET_ROOT,
) -> None:
    """Raise FileNotFoundError naming what ``dataset`` needs and how to provide it.

    Cheap: it only looks for files. With ``download`` true the downloadable data sets are
    not checked (torchvision fetches them when the data set is prepared).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    check_root(wordnet_root)
    if dataset == "openmoji":
        openmoji_font()
        return
    root = resolve_root(dataset, root)
    if download and dataset in DOWNLOADS:
        require_root(dataset, root, f"a folder to download {dataset} into")
        return
    CHECKS[dataset](root)


# ---------------------------------------------------------------------------------------------
# Class table


def _class_names(names: list[str], override: Sequence[str] | None, dataset: str) -> list[str]:
    if override is None:
        return names
    if len(override) != len(names):
        raise ValueError(
            f"class_names has {len(override)} names but {dataset} has {len(names)} classes"
        )
    return [prompt_name(n) for n in override]


def _class_table(
    names: list[str], sources: list[str], wordnet: WordNet, descriptions: str | Path | None
) -> pd.DataFrame:
    senses = [wordnet.sense(name) for name in names]
    table = pd.DataFrame(
        {
            "class_id": np.arange(len(names), dtype=np.int64),
            "name": names,
            "source": sources,
            "group": [s.lexname if s else "other" for s in senses],
            "description": [s.gloss if s else "" for s in senses],
        }
    )
    if descriptions is not None:
        table["description"] = _override_descriptions(table, Path(descriptions))
    return table


def _override_descriptions(table: pd.DataFrame, path: Path) -> pd.Series:
    if not path.is_file():
        raise FileNotFoundError(f"descriptions CSV not found: {path}")
    given = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"name", "description"} <= set(given.columns):
        raise ValueError(f"{path} must have columns name,description (has {list(given.columns)})")
    lookup = dict(zip(given["name"].map(prompt_name), given["description"], strict=True))
    unknown = sorted(set(lookup) - set(table["name"]))
    if unknown:
        log.warning("descriptions for names not in the data set ignored: %s", unknown[:10])
    return table["name"].map(lookup).fillna(table["description"])
