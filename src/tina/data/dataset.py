"""The data set API: prepare a data set, save and load it, check its resources.

Every data set comes out the same way: RGB uint8 images at ``image_size`` x ``image_size``,
int64 labels 0..C-1 and a class table whose ``name`` is the text prompt of the class and
whose ``group`` and ``description`` come from WordNet 3.0 (first noun sense).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tina.data.loading import LoadRequest, prompt_name
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
from tina.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from tina.wordnet import WordNet, check_root

log = logging.getLogger("tina.data")

DATASETS = ("openmoji", "fashion_mnist", "cifar100", "caltech101", "tiny_imagenet", "medmnist_npz")
AUGMENT_LEVELS = ("none", "mild", "strong")
CLASS_COLUMNS = ("class_id", "name", "source", "group", "description")

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
    test_images: torch.Tensor  # uint8 [M, 3, H, W]
    test_labels: torch.Tensor  # int64 [M]
    classes: pd.DataFrame  # class_id, name, source, group, description

    @property
    def n_classes(self) -> int:
        return len(self.classes)


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
    augment: str = "strong",
    seed: int = 0,
    max_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    descriptions: str | Path | None = None,
    wordnet_root: str | Path = WORDNET_ROOT,
) -> Dataset:
    """Render or load ``dataset`` as RGB uint8 images of ``image_size`` pixels.

    ``train_per_class``/``test_per_class``: images per class (None: all the data set has; for
    openmoji, which renders its images, None means 60 and 30). ``max_classes`` keeps the first
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
    result = Dataset(
        train_images=loaded.train_images,
        train_labels=loaded.train_labels,
        test_images=loaded.test_images,
        test_labels=loaded.test_labels,
        classes=classes,
    )
    log.info(
        "%s: %d classes, %d train and %d test images at %dx%d",
        dataset,
        n_kept,
        len(result.train_labels),
        len(result.test_labels),
        image_size,
        image_size,
    )
    return result


def save_dataset(ds: Dataset, tensors_path: str | Path, classes_path: str | Path) -> None:
    """Write the images and labels (safetensors) and the class table (CSV), atomically."""
    save_tensors(
        tensors_path,
        {
            "train_images": ds.train_images,
            "train_labels": ds.train_labels,
            "test_images": ds.test_images,
            "test_labels": ds.test_labels,
        },
    )
    write_csv(classes_path, ds.classes.loc[:, list(CLASS_COLUMNS)])


def load_dataset(tensors_path: str | Path, classes_path: str | Path) -> Dataset:
    """Read a data set written by :func:`save_dataset`."""
    tensors = load_tensors(tensors_path)
    classes = pd.read_csv(
        classes_path,
        dtype={"class_id": "int64", "name": str, "source": str, "group": str, "description": str},
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
