"""Where the real data sets live: default roots, the files each needs, checks and downloads.

Each check only looks for files, and its error names what is missing and how to provide it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("tina.data")

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def resolve_root(dataset: str, root: str | Path | None) -> Path | None:
    """``root`` as a path, or the default root of ``dataset`` (None where it has none)."""
    if root is not None:
        return Path(root)
    if dataset == "fashion_mnist":
        return Path(FASHION_MNIST_ROOT)
    return None


def require_root(dataset: str, root: Path | None, what: str) -> Path:
    """``root``, or FileNotFoundError saying that ``dataset`` needs ``what`` as data.root."""
    if root is None:
        raise FileNotFoundError(f"{dataset} needs data.root: {what}")
    return root


FASHION_FILES = (  # stems of the idx files: train images and labels, test images and labels
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def fashion_file(root: Path, stem: str) -> Path | None:
    """The Fashion-MNIST idx file ``stem`` (gzip-compressed or not) under ``root``, or None."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _check_fashion_mnist(root: Path | None) -> None:
    missing = [stem for stem in FASHION_FILES if fashion_file(root, stem) is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {root} (missing {', '.join(missing)}.gz): "
            "apt-get install dataset-fashion-mnist, set data.root to a folder with the idx "
            "files, or set data.download: true"
        )


def cifar_dir(root: Path) -> Path:
    """The folder of the CIFAR-100 pickles under ``root``."""
    return root / "cifar-100-python"


def _check_cifar100(root: Path | None) -> None:
    root = require_root("cifar100", root, "the folder that holds cifar-100-python/")
    folder = cifar_dir(root)
    if not all((folder / n).is_file() for n in ("train", "test", "meta")):
        raise FileNotFoundError(
            f"CIFAR-100 not found under {folder} (needs train, test, meta); download "
            "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
            "unpack it there, or set data.download: true"
        )


def caltech_dir(root: Path) -> Path | None:
    """The Caltech-101 category folders under ``root``, or None."""
    for folder in (root / "101_ObjectCategories", root / "caltech101" / "101_ObjectCategories"):
        if folder.is_dir():
            return folder
    return None


def _check_caltech101(root: Path | None) -> None:
    root = require_root("caltech101", root, "the folder that holds 101_ObjectCategories/")
    if caltech_dir(root) is None:
        raise FileNotFoundError(
            f"Caltech-101 not found under {root}/101_ObjectCategories; download it from "
            "https://data.caltech.edu/records/mzrjq-6wc02 and unpack it there, or set "
            "data.download: true"
        )


def tiny_dir(root: Path) -> Path:
    """The Tiny-ImageNet folder under ``root``."""
    return root / "tiny-imagenet-200"


def _check_tiny_imagenet(root: Path | None) -> None:
    root = require_root("tiny_imagenet", root, "the folder that holds tiny-imagenet-200/")
    folder = tiny_dir(root)
    needed = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")
    missing = [n for n in needed if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"Tiny-ImageNet not found under {folder} (missing {', '.join(missing)}); download "
            f"{TINY_IMAGENET_URL} and unzip it in {root}, or set data.download: true"
        )


def _check_medmnist_npz(root: Path | None) -> None:
    path = require_root("medmnist_npz", root, "the path of the .npz file")
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST .npz file not found: {path}; download e.g. organamnist.npz from "
            "https://medmnist.com (Zenodo) and set data.root to its path"
        )


def download_dataset(dataset: str, root: Path | None) -> None:
    """Fetch ``dataset`` into ``root`` unless its files are already there."""
    if dataset not in DOWNLOADS:
        raise ValueError(f"{dataset} cannot be downloaded here: set data.download: false")
    root = require_root(dataset, root, f"a folder to download {dataset} into")
    try:
        CHECKS[dataset](root)
    except FileNotFoundError:
        log.info("downloading %s into %s", dataset, root)
        DOWNLOADS[dataset](str(root))


def _download_tiny_imagenet(root: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(TINY_IMAGENET_URL, root)


def _torchvision_download(name: str):
    def fetch(root: str) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, name)(root, download=True)

    return fetch


DOWNLOADS = {
    "fashion_mnist": _torchvision_download("FashionMNIST"),
    "cifar100": _torchvision_download("CIFAR100"),
    "caltech101": _torchvision_download("Caltech101"),
    "tiny_imagenet": _download_tiny_imagenet,
}
CHECKS = {
    "fashion_mnist": _check_fashion_mnist,
    "cifar100": _check_cifar100,
    "caltech101": _check_caltech101,
    "tiny_imagenet": _check_tiny_imagenet,
    "medmnist_npz": _check_medmnist_npz,
}
