"""Readers of the real data sets: Fashion-MNIST idx files, CIFAR-100 pickles, MedMNIST
``.npz`` arrays (array data sets), and Caltech-101 and Tiny-ImageNet JPEG folders.

Each keeps the first ``max_classes`` classes and a seeded per-class subsample of their images
(the train and test streams are independent), resized to RGB squares.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from tina.data.images import read_images, to_rgb_size
from tina.data.loading import (
    SPLIT_STREAM,
    TEST_STREAM,
    TRAIN_STREAM,
    Loaded,
    LoadRequest,
    kept_classes,
    prompt_name,
)
from tina.data.sources import FASHION_FILES, caltech_dir, cifar_dir, fashion_file, tiny_dir
from tina.seeding import stream_generator

FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
ORGANAMNIST_CLASSES = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)
CALTECH_TEST_FRACTION = 0.2  # test share of each Caltech-101 class when test_per_class is None


# ---------------------------------------------------------------------------------------------
# Per-class subsampling


def _subsample(labels: torch.Tensor, per_class: int | None, gen: torch.Generator) -> torch.Tensor:
    """Sorted indices of up to ``per_class`` random items of each label (all when None)."""
    if per_class is None:
        return torch.arange(len(labels))
    keep = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        keep.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep)).values if keep else torch.zeros(0, dtype=torch.long)


def _select(
    images: torch.Tensor, labels: torch.Tensor, per_class: int | None, n_kept: int, gen
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep classes below ``n_kept`` and a seeded per-class subsample of them."""
    in_kept = torch.nonzero(labels < n_kept).flatten()
    chosen = in_kept[_subsample(labels[in_kept], per_class, gen)]
    return images[chosen], labels[chosen]


# ---------------------------------------------------------------------------------------------
# Array data sets: Fashion-MNIST, CIFAR-100, MedMNIST .npz


def _array_split(
    request: LoadRequest,
    names: list[str],
    sources: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    superclasses: list[str] | None = None,
) -> Loaded:
    n_kept = kept_classes(len(names), request.max_classes)
    train_x, train_y = _select(
        *train, request.train_per_class, n_kept, stream_generator(request.seed, TRAIN_STREAM)
    )
    test_x, test_y = _select(
        *test, request.test_per_class, n_kept, stream_generator(request.seed, TEST_STREAM)
    )
    return Loaded(
        names=names,
        sources=sources,
        train_images=to_rgb_size(train_x, request.image_size),
        train_labels=train_y.long(),
        test_images=to_rgb_size(test_x, request.image_size),
        test_labels=test_y.long(),
        superclasses=superclasses,
    )


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzip-compressed) of unsigned bytes as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, n_dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    shape = struct.unpack(f">{n_dims}I", data[4 : 4 + 4 * n_dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def load_fashion_mnist(request: LoadRequest) -> Loaded:
    """Fashion-MNIST from its four idx files."""
    arrays = [
        torch.from_numpy(_read_idx(fashion_file(request.root, s)).copy()) for s in FASHION_FILES
    ]
    names = list(FASHION_MNIST_CLASSES)
    return _array_split(request, names, list(map(str, range(10))), arrays[:2], arrays[2:])


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def load_cifar100(request: LoadRequest) -> Loaded:
    """CIFAR-100 (fine labels, each with its superclass) from the pickles of
    ``cifar-100-python``."""
    folder = cifar_dir(request.root)
    meta = _unpickle(folder / "meta")
    labels = meta["fine_label_names"]
    splits, batches = [], []
    for part in ("train", "test"):
        batch = _unpickle(folder / part)
        images = torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        splits.append((images, torch.as_tensor(batch["fine_labels"], dtype=torch.long)))
        batches.append(batch)
    names = [prompt_name(label) for label in labels]
    superclasses = cifar_superclasses(batches, meta)
    return _array_split(request, names, list(labels), *splits, superclasses=superclasses)


def cifar_superclasses(batches: list[dict], meta: dict) -> list[str] | None:
    """Each fine class's superclass (its coarse label's name) from the pickles' ``fine_labels``
    and ``coarse_labels`` and the meta's ``coarse_label_names``; None when the files have none."""
    if "coarse_label_names" not in meta or not all("coarse_labels" in b for b in batches):
        return None
    coarse: dict[int, int] = {}
    for batch in batches:
        for fine, label in zip(batch["fine_labels"], batch["coarse_labels"], strict=True):
            if coarse.setdefault(int(fine), int(label)) != int(label):
                raise ValueError(f"CIFAR-100 fine class {fine} has two coarse labels")
    names = meta["coarse_label_names"]
    missing = [i for i in range(len(meta["fine_label_names"])) if i not in coarse]
    if missing:
        raise ValueError(f"CIFAR-100 fine classes {missing[:5]} have no images, so no superclass")
    return [names[coarse[i]] for i in range(len(meta["fine_label_names"]))]


def load_medmnist_npz(request: LoadRequest) -> Loaded:
    """A MedMNIST ``.npz`` file (its train and test arrays; val is not used)."""
    with np.load(request.root) as npz:
        missing = {"train_images", "train_labels", "test_images", "test_labels"} - set(npz.files)
        if missing:
            raise ValueError(f"{request.root} lacks the arrays {sorted(missing)}")
        arrays = {
            k: torch.from_numpy(npz[k].copy()) for k in npz.files if k.startswith(("train", "test"))
        }
    labels = list(request.class_names or ORGANAMNIST_CLASSES)
    splits = []
    for part in ("train", "test"):
        y = arrays[f"{part}_labels"].reshape(-1).long()
        if len(y) and int(y.max()) >= len(labels):
            raise ValueError(
                f"{request.root} has label {int(y.max())} but only {len(labels)} class names; "
                "set data.class_names"
            )
        splits.append((arrays[f"{part}_images"], y))
    names = [prompt_name(n) for n in labels]
    return _array_split(request, names, labels, *splits)


# ---------------------------------------------------------------------------------------------
# Folder data sets: Caltech-101, Tiny-ImageNet


def _folder_split(
    request: LoadRequest,
    names: list[str],
    sources: list[str],
    train: tuple[list[Path], torch.Tensor],
    test: tuple[list[Path], torch.Tensor],
) -> Loaded:
    """Subsample file lists per class, then decode only the chosen files."""
    n_kept = kept_classes(len(names), request.max_classes)
    parts = []
    for (paths, labels), per_class, stream in (
        (train, request.train_per_class, TRAIN_STREAM),
        (test, request.test_per_class, TEST_STREAM),
    ):
        in_kept = torch.nonzero(labels < n_kept).flatten()
        chosen = in_kept[
            _subsample(labels[in_kept], per_class, stream_generator(request.seed, stream))
        ]
        images = read_images([paths[i] for i in chosen.tolist()], request.image_size, "decoding")
        parts += [images, labels[chosen]]
    return Loaded(names, sources, *parts)


def load_caltech101(request: LoadRequest) -> Loaded:
    """Caltech-101 category folders, split per class into train and test files."""
    folder = caltech_dir(request.root)
    categories = sorted(
        d.name for d in folder.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google"
    )
    gen = stream_generator(request.seed, SPLIT_STREAM)
    train_paths, train_labels, test_paths, test_labels = [], [], [], []
    for label, category in enumerate(categories):
        files = sorted(p for p in (folder / category).iterdir() if p.suffix.lower() == ".jpg")
        order = torch.randperm(len(files), generator=gen).tolist()
        n_test = _caltech_test_count(len(files), request.test_per_class)
        test_paths += [files[i] for i in order[:n_test]]
        train_paths += [files[i] for i in order[n_test:]]
        test_labels += [label] * n_test
        train_labels += [label] * (len(files) - n_test)
    names = [prompt_name(c) for c in categories]
    return _folder_split(
        request,
        names,
        categories,
        (train_paths, torch.tensor(train_labels, dtype=torch.long)),
        (test_paths, torch.tensor(test_labels, dtype=torch.long)),
    )


def _caltech_test_count(n_files: int, test_per_class: int | None) -> int:
    """Test images of a class: test_per_class (or 20%), leaving at least one for training."""
    wanted = round(CALTECH_TEST_FRACTION * n_files) if test_per_class is None else test_per_class
    return max(0, min(wanted, n_files - 1))


def load_tiny_imagenet(request: LoadRequest) -> Loaded:
    """Tiny-ImageNet: the train folders for training, the val images for testing."""
    folder = tiny_dir(request.root)
    wnids = sorted((folder / "wnids.txt").read_text().split())
    words = {}
    for line in (folder / "words.txt").read_text().splitlines():
        wnid, _, synonyms = line.partition("\t")
        words[wnid] = synonyms.split(",")[0]
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        train_paths += files
        train_labels += [label_of[wnid]] * len(files)
    test_paths, test_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in label_of:
            test_paths.append(folder / "val" / "images" / fields[0])
            test_labels.append(label_of[fields[1]])
    names = [prompt_name(words.get(wnid, wnid)) for wnid in wnids]
    return _folder_split(
        request,
        names,
        wnids,
        (train_paths, torch.tensor(train_labels, dtype=torch.long)),
        (test_paths, torch.tensor(test_labels, dtype=torch.long)),
    )
