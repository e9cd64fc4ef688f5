"""Data sets: OpenMoji renders (the offline default) and loaders for real image data sets.

The modules: :mod:`~tina.data.dataset` (the API: prepare, save, load, check resources),
:mod:`~tina.data.openmoji` (the OpenMoji renderer), :mod:`~tina.data.readers` (Fashion-MNIST,
CIFAR-100, MedMNIST, Caltech-101, Tiny-ImageNet), :mod:`~tina.data.sources` (where those live,
checks and downloads), :mod:`~tina.data.loading` (what a loader gets and returns) and
:mod:`~tina.data.images` (image utilities). The public API is re-exported here.
"""

from tina.data.dataset import (
    AUGMENT_LEVELS,
    CLASS_COLUMNS,
    DATASETS,
    TENSORS,
    Dataset,
    check_resources,
    load_dataset,
    prepare_dataset,
    save_dataset,
    split_validation,
)
from tina.data.images import read_image, read_images, to_float
from tina.data.openmoji import openmoji_classes, rasterise_glyphs, render_openmoji

__all__ = [
    "AUGMENT_LEVELS",
    "CLASS_COLUMNS",
    "DATASETS",
    "TENSORS",
    "Dataset",
    "check_resources",
    "load_dataset",
    "openmoji_classes",
    "prepare_dataset",
    "rasterise_glyphs",
    "read_image",
    "read_images",
    "render_openmoji",
    "save_dataset",
    "split_validation",
    "to_float",
]
