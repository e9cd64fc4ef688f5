"""What a data set loader is given and returns, shared by every loader.

:func:`tina.data.dataset.prepare_dataset` hands each loader a :class:`LoadRequest` and gets a
:class:`Loaded` back: the names of all classes and the images of the kept ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tina.wordnet import WordNet

# Random stream ids: the train images, the test images, the train/test split of files, the
# train/validation split of the training images.
TRAIN_STREAM, TEST_STREAM, SPLIT_STREAM, VAL_STREAM = 0, 1, 2, 3


@dataclass
class Loaded:
    """What a loader returns: names of all classes, data of the first ``n_kept``."""

    names: list[str]
    sources: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    superclasses: list[str] | None = None  # each class's superclass, where the data set has them


@dataclass(frozen=True)
class LoadRequest:
    """The settings of :func:`tina.data.dataset.prepare_dataset` that a loader needs."""

    root: Path | None
    image_size: int
    train_per_class: int | None
    test_per_class: int | None
    augment: str
    seed: int
    max_classes: int | None
    class_names: tuple[str, ...] | None
    wordnet: WordNet


def prompt_name(label: str) -> str:
    """The prompt text of a label: lower-case words separated by single spaces."""
    return " ".join(label.replace("_", " ").lower().split())


def kept_classes(n_classes: int, max_classes: int | None) -> int:
    """How many of ``n_classes`` classes are kept (the first ``max_classes``; all when None)."""
    return n_classes if max_classes is None else min(max_classes, n_classes)
