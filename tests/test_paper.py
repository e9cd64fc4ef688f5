"""Paper-scale configs (config/paper/*.yaml) on small FAKE files in the real formats.

- Every paper config is complete: it sets each key that config/config.yaml sets (Snakemake
  loads config.yaml first and merges the paper config over it, so a key left out would keep
  its laptop value).
- ``snakemake -n all`` plans each paper config's whole DAG with its data root pointed at fake
  files (CIFAR-100 pickles, Caltech-101 and Tiny-ImageNet folders of JPEGs, an OrganAMNIST
  ``.npz``) and ``encoder.path`` at a tiny random CLIP, a test double for the real ViT-B/32
  weights saved with ``save_pretrained`` like them.
- The CIFAR-100 pipeline runs for real on the CPU up to the Tina checkpoint, at toy size, with
  Tina trained data-parallel on 2 processes (torchrun, gloo); the checkpoint matches Tina trained
  in one process on the same files.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from test_encoders import save_tiny_clip

from tina.config import load_config
from tina.sampling import load_tina
from tina.train import train_tina_stage

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "config" / "paper").glob("*.yaml"))
COPIED = ("Snakefile", "rules", "src", "config", "envs", "profiles", "report", "pyproject.toml")
# The first 20 CIFAR-100 fine labels, as cifar-100-python/meta stores them.
CIFAR_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle",
]  # fmt: skip
# Their coarse labels (superclasses), and the 20 coarse label names, as the real files have them.
CIFAR_COARSE = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11]
CIFAR_COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]  # fmt: skip


# --------------------------------------------------------------------------- fake data sets
def class_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[N, 3, size, size]``: a colour per class (seeded) plus pixel noise."""
    colours = np.random.default_rng(0).integers(30, 225, size=(int(labels.max()) + 1, 3))
    noise = rng.normal(0, 25, size=(len(labels), 3, size, size))
    return np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)


def write_cifar100(
    root: Path,
    per_class: tuple[int, int] = (12, 6),
    seed: int = 0,
    names: list[str] = CIFAR_NAMES,
    coarse: list[int] = CIFAR_COARSE,
) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` pickled like the real files: the fine classes
    ``names`` (the real files' first 20 by default), each in the superclass ``coarse[i]``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    meta = {"fine_label_names": list(names), "coarse_label_names": CIFAR_COARSE_NAMES}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    for part, n in zip(("train", "test"), per_class, strict=True):
        labels = np.repeat(np.arange(len(names)), n)
        batch = {
            "filenames": [f"{part}_{i}.png" for i in range(len(labels))],
            "fine_labels": labels.tolist(),
            "coarse_labels": [coarse[i] for i in labels],
            "data": class_images(labels, 32, rng).reshape(len(labels), -1),
        }
        (folder / part).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def _jpeg(path: Path, colour: tuple[int, int, int], size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path, format="JPEG")


def write_caltech101(
    root: Path,
    categories: tuple[str, ...] = ("accordion", "airplanes", "anchor"),
    per_class: int = 2,
    size: int = 48,
) -> Path:
    """``root/101_ObjectCategories/<category>/image_000N.jpg``: ``categories``, and the
    BACKGROUND_Google folder that the loader skips."""
    folder = root / "101_ObjectCategories"
    for i, category in enumerate(("BACKGROUND_Google", *categories)):
        colour = ((60 * i) % 256, (90 + 37 * i) % 256, (30 + 71 * i) % 256)
        for n in range(1, per_class + 1):
            _jpeg(folder / category / f"image_{n:04d}.jpg", colour, size)
    return root


TINY_WNIDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander"}


def write_tiny_imagenet(
    root: Path, wnids: dict[str, str] = TINY_WNIDS, per_class: tuple[int, int] = (1, 1)
) -> Path:
    """``root/tiny-imagenet-200`` with the classes ``wnids`` (wnid: words): wnids, words, train
    and val folders of 64x64 JPEGs."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in wnids.items()))
    annotations = []
    for i, wnid in enumerate(wnids):
        colour = (200, (40 * i) % 256, (13 * i) % 256)
        for n in range(per_class[0]):
            _jpeg(folder / "train" / wnid / "images" / f"{wnid}_{n}.JPEG", colour, 64)
        for n in range(per_class[1]):
            name = f"val_{i * per_class[1] + n}.JPEG"
            _jpeg(folder / "val" / "images" / name, colour, 64)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def write_organamnist(path: Path, seed: int = 0, per_class: int = 3) -> Path:
    """An OrganAMNIST-style ``.npz``: 28x28 grey slices, labels ``[N, 1]`` over 11 organs."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part in ("train", "val", "test"):
        labels = np.repeat(np.arange(11), per_class)[:, None].astype(np.uint8)
        arrays[f"{part}_images"] = class_images(labels[:, 0], 28, rng)[:, 0]
        arrays[f"{part}_labels"] = labels
    np.savez(path, **arrays)
    return path


FAKE_DATA = {
    "cifar100": lambda d: write_cifar100(d / "cifar100"),
    "caltech101": lambda d: write_caltech101(d / "caltech101"),
    "tiny_imagenet": lambda d: write_tiny_imagenet(d / "tiny_imagenet"),
    "organamnist": lambda d: write_organamnist(d / "organamnist.npz"),
}


# --------------------------------------------------------------------------- fixtures
def copy_repo(target: Path) -> Path:
    """The workflow's files (not results or the venv) copied to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP saved like the real weights: the test double for ViT-B/32."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snakemake(repo: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", *args]
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(command, cwd=repo, **pipe)


def job_counts(output: str) -> dict[str, int]:
    """The dry run's "Job stats" table as {rule: count}."""
    table = output.split("Job stats:")[-1].split("Reasons:")[0]
    counts = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            counts[fields[0]] = int(fields[1])
    return counts


# --------------------------------------------------------------------------- tests
def _leaf_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in tree.items():
        if isinstance(value, dict):
            keys |= _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_paper_configs_are_complete():
    """Each config sets every key config.yaml sets, names its own run and fits its GPUs."""
    assert [p.stem for p in PAPER] == ["caltech101", "cifar100", "organamnist", "tiny_imagenet"]
    default = _leaf_keys(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    runs = set()
    for path in PAPER:
        given = _leaf_keys(yaml.safe_load(path.read_text()))
        assert default <= given, f"{path.name} leaves out {sorted(default - given)}"
        config = load_config(path)
        runs.add(config["run"])
        assert config["encoder"]["name"] == "clip" and config["data"]["download"] is False
        assert config["tina"]["batch_size"] % config["tina"]["devices"] == 0
        assert all(w % config["tina"]["heads"] == 0 for w in config["scaling"]["widths"])
        assert max(config["scaling"]["tasks"]) <= config["tasks"]["n_train"]
    assert len(runs) == len(PAPER)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory, tiny_clip) -> dict[str, tuple[int, str]]:
    """``snakemake -n all`` of every paper config (run side by side) on fake data."""
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    data = repo / "data"
    runs = {}
    for path in PAPER:
        root = FAKE_DATA[path.stem](data)
        override = {"data": {"root": str(root)}, "encoder": {"path": str(tiny_clip)}}
        extra = write_yaml(repo / f"override-{path.stem}.yaml", override)
        config = f"config/paper/{path.name}"
        runs[path.stem] = snakemake(repo, "-n", "all", "--configfile", config, str(extra))
    # communicate, not wait: a dry run's plan fills the pipe (~55 kB of small writes leave no
    # room in its 64 kB), and a writer blocked on a full pipe never exits
    outputs = {name: proc.communicate(timeout=300)[0] for name, proc in runs.items()}
    return {name: (runs[name].returncode, output) for name, output in outputs.items()}


@pytest.mark.parametrize("name", [p.stem for p in PAPER])
def test_paper_config_dry_run(dry_runs, name):
    returncode, output = dry_runs[name]
    assert returncode == 0, output[-3000:]
    config = load_config(ROOT / "config" / "paper" / f"{name}.yaml")
    counts = job_counts(output)
    assert counts["finetune_pmodels"] == counts["finetune_eval_pmodels"] == config["zoo"]["shards"]
    assert counts["scale_width"] == len(config["scaling"]["widths"])
    assert counts["scale_net"] == len(config["scaling"]["nets"])
    for rule in ("prepare_data", "train_generic", "embed_prompts", "train_tina", "all"):
        assert counts[rule] == 1, rule


@pytest.mark.workflow
@pytest.mark.slow
def test_cifar100_pipeline_to_tina(tmp_path, tiny_clip):
    """Fake CIFAR-100 -> ... -> Tina trained on 2 processes; equal to 1 process."""
    repo = copy_repo(tmp_path / "repo")
    root = write_cifar100(tmp_path / "cifar100")
    tiny = {
        "run": "cifar100-tiny",
        "data": {"root": str(root), "max_classes": 20},
        "tasks": {"k": 4, "n_train": 24, "n_val": 4, "n_test_id": 4, "n_test_ood": 2,
                  "ood_unseen": [1], "kway": [2], "n_kway": 2},
        "generic": {"steps": 60, "batch_size": 64},
        "zoo": {"shards": 2, "steps": 20, "batch_size": 16, "chunk": 16},
        "encoder": {"path": str(tiny_clip)},
        "tina": {"width": 16, "depth": 1, "heads": 2, "chunk_size": 256, "steps": 20,
                 "batch_size": 8, "warmup": 2, "eval_every": 10, "eval_sampler_steps": 2,
                 "devices": 2},
    }  # fmt: skip
    extra = write_yaml(repo / "tiny.yaml", tiny)
    results = repo / "results" / "cifar100-tiny"
    target = "results/cifar100-tiny/tina/model.safetensors"
    run = snakemake(
        repo, target, "--cores", "2", "--configfile", "config/paper/cifar100.yaml", str(extra)
    )
    output = run.communicate(timeout=600)[0]
    assert run.returncode == 0, output[-4000:]
    log = (results / "logs" / "train_tina.log").read_text()
    assert "training on 2 processes" in log and "[rank 0]" in log

    ddp = load_tina(results / "tina" / "model.safetensors")
    assert ddp.class_names == [name.replace("_", " ") for name in CIFAR_NAMES]
    assert ddp.model.prompt_dim == 16  # the tiny CLIP's projection
    inputs = types.SimpleNamespace(
        dataset=results / "data" / "dataset.safetensors",
        classes=results / "data" / "classes.csv",
        tasks=results / "tasks.csv",
        generic=results / "generic" / "model.safetensors",
        zoo=[results / "zoo" / f"train-{i}.safetensors" for i in range(2)],
        embeddings=results / "prompts" / "embeddings.safetensors",
        projection=results / "prompts" / "image_projection.safetensors",
        grounding=results / "prompts" / "grounding.json",
    )
    config = load_config(ROOT / "config" / "paper" / "cifar100.yaml")
    section = config["tina"] | tiny["tina"]
    encoder = config["encoder"] | tiny["encoder"]
    single, history = train_tina_stage(
        inputs, section, 0, encoder=encoder, shots=config["evaluate"]["shots"]
    )
    reference = single.model.state_dict()
    diff = max(float((ddp.model.state_dict()[k] - v).abs().max()) for k, v in reference.items())
    print(f"2 processes vs 1: max |weight difference| {diff:.3e}")
    assert diff < 1e-5, f"2 processes vs 1: max |weight difference| {diff:.2e}"
    ddp_history = pd.read_csv(results / "tina" / "history.csv")
    assert ddp_history["step"].tolist() == history["step"].tolist() == [10, 20]
    assert ddp_history["loss"].to_numpy() == pytest.approx(history["loss"].to_numpy(), rel=1e-5)
