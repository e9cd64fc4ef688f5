"""Each paper config at its real sizes, on fake data, through Snakemake to the report (opt-in).

Run it by name: ``pytest -m paper_shape`` (tests/conftest.py leaves it out of every other run).
It took 15 to 28 minutes per config on 2 CPU cores; its peak, the 1.09B-parameter Tina of the
cnn76k scaling point, is about 23 GiB, so a 24 GiB machine needs a few GiB of swap.

What stays real: the data set's class count and image size (fake images in the real file
formats; WordNet nouns as class names where the files name the classes, so that every class has
a description; OrganAMNIST's own organ names), Tina at the
config's 2048 x 12, the generated nets (cnn5k to cnn76k) and their chunking, the zoo's chunk, every
experiment and the report, and the memory each job declares. What is cut: training steps (1 or
2), batch sizes of Tina and the hypernetwork (2), tasks (a handful per experiment), DDIM steps (2)
and the diffusion schedule (20 steps, so that the sampler experiment's DDPM stays short), and
CLIP's towers (a random CLIP with ViT-B/32's interface: 224 px images, 77 text tokens,
512-dimensional embeddings).

This catches what no tiny test can: shape bugs at 20-way or 64 px, memory at 650M parameters,
chunked tokens at cnn76k. Each config's wall time and peak RSS (the largest resident set of any
of its jobs, as the kernel counts it) are printed, and appended as a JSON line to the file named
by ``PAPER_SHAPE_RECORD`` when it is set; the README's "Paper configs at full shape" quotes them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_encoders import save_tiny_clip
from test_paper import (
    PAPER,
    copy_repo,
    snakemake,
    write_caltech101,
    write_cifar100,
    write_organamnist,
    write_tiny_imagenet,
    write_yaml,
)

from tina.config import load_config
from tina.cost import stage_costs
from tina.io import read_metadata
from tina.resources import resource_entry, rule_memory_mb, rule_stages
from tina.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from tina.wordnet import load_nouns

pytestmark = pytest.mark.paper_shape

# Every cut, the same for the four configs (see the module docstring).
SMOKE = {
    "tasks": {"n_train": 4, "n_val": 2, "n_test_id": 2, "n_test_ood": 2, "n_kway": 2},
    "generic": {"steps": 2},
    "zoo": {"shards": 2, "steps": 2},
    "encoder": {"projection_steps": 2},
    "tina": {"steps": 2, "batch_size": 2, "warmup": 1, "eval_every": 2,
             "eval_sampler_steps": 2, "timesteps": 20},
    "evaluate": {"samples": 1, "ddim_steps": 2, "ddim_compare": [2], "sampler_tasks": 1,
                 "hypernetwork_steps": 2, "noise_pmodels": 2},
    "scaling": {"steps": 2, "tasks": [2, 4], "net_tasks": 4, "net_generic_steps": 2,
                "net_zoo_steps": 2},
}  # fmt: skip
TRAIN_PER_CLASS, TEST_PER_CLASS = 12, 4  # enough for 8 shots after the validation hold-out
ONE_HOUR = 3600


def wordnet_nouns(n: int, root: str | Path = WORDNET_ROOT) -> list[tuple[str, int]]:
    """``n`` one-word WordNet nouns and the offset of each one's first sense, spread evenly over
    ``index.noun``: real class names, so that each has a gloss (a description)."""
    nouns = [
        (lemma, sense.offset)
        for lemma, sense in load_nouns(root).items()
        if lemma.isalpha() and 4 <= len(lemma) <= 10
    ]
    step = len(nouns) // n
    return nouns[::step][:n]


def write_full(name: str, folder: Path) -> Path:
    """Fake files of the paper config ``name``'s data set, at its class count and image size."""
    if name == "cifar100":  # 100 classes in 20 superclasses of 5
        names = [lemma for lemma, _ in wordnet_nouns(100)]
        coarse = [i // 5 for i in range(100)]
        return write_cifar100(folder / name, (TRAIN_PER_CLASS, TEST_PER_CLASS), 0, names, coarse)
    if name == "tiny_imagenet":  # 200 classes, 64 x 64 JPEGs
        wnids = {f"n{offset:08d}": lemma for lemma, offset in wordnet_nouns(200)}
        return write_tiny_imagenet(folder / name, wnids, (TRAIN_PER_CLASS, TEST_PER_CLASS))
    if name == "caltech101":  # 101 categories of larger JPEGs; the loader holds 20% out as test
        categories = tuple(lemma for lemma, _ in wordnet_nouns(101))
        return write_caltech101(folder / name, categories, TRAIN_PER_CLASS + TEST_PER_CLASS, 96)
    if name == "organamnist":  # 11 organs, 28 x 28 grey slices, in one .npz file
        folder.mkdir(parents=True, exist_ok=True)
        return write_organamnist(folder / "organamnist.npz", per_class=TRAIN_PER_CLASS)
    raise KeyError(name)


# Runs a command and prints the largest resident set of it or any process under it (the
# kernel's maximum over every reaped descendant: exact, where Snakemake's benchmarks sample).
PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print("peak RSS of any job (kB):", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def job_peaks(results: Path) -> dict[str, float]:
    """Each job's ``max_rss`` (MB) from its Snakemake benchmark, by the file's path under
    ``benchmarks/`` (whose first part is the rule's name). The benchmarks sample memory, so they
    may miss a short peak; they tell which job it was."""
    peaks = {}
    for tsv in (results / "benchmarks").glob("**/*.tsv"):
        table = pd.read_csv(tsv, sep="\t")
        peaks[str(tsv.relative_to(results / "benchmarks"))] = float(table["max_rss"].max())
    return peaks


def memory_mb() -> int:
    """This machine's physical memory in MB: the scheduler's budget for the jobs' mem_mb."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


@pytest.fixture(scope="module")
def shaped_clip(tmp_path_factory) -> Path:
    """A random CLIP with ViT-B/32's interface (224 px, 77 tokens, 512-d) and tiny towers."""
    folder = tmp_path_factory.mktemp("clip_vit_b_32_shape")
    return save_tiny_clip(
        folder, projection_dim=512, image_size=224, patch_size=32, text_positions=77
    )


@pytest.mark.parametrize("name", [p.stem for p in PAPER])
def test_paper_config_at_full_shape(tmp_path, shaped_clip, name):
    repo = copy_repo(tmp_path / "repo")
    root = write_full(name, tmp_path / "data")
    override = {**SMOKE, "data": {"root": str(root)}, "encoder": {
        **SMOKE["encoder"], "path": str(shaped_clip)}}  # fmt: skip
    extra = write_yaml(repo / "shape.yaml", override)
    paper = f"config/paper/{name}.yaml"
    sections = yaml.safe_load((repo / paper).read_text())
    config = load_config(repo / paper, {k: sections[k] | v for k, v in override.items()})
    budget = f"mem_mb={memory_mb()}"  # a job declaring more runs alone
    args = ("--cores", "2", "--resources", budget, "--configfile", paper, str(extra))
    start = time.perf_counter()
    run = subprocess.Popen(
        [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "snakemake", "all", *args],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = run.communicate(timeout=6 * ONE_HOUR)[0]
    wall = time.perf_counter() - start
    try:
        assert run.returncode == 0, output[-5000:]
        again = snakemake(repo, "-n", "all", *args).communicate(timeout=600)[0]
        assert "Nothing to be done" in again, again[-3000:]

        results = repo / "results" / config["run"]
        meta = read_metadata(results / "tina" / "model.safetensors")
        built = json.loads(meta["meta"])["parameters"]
        expected = {c.stage: c.params for c in stage_costs(config)}["Tina training"]
        assert built == expected, f"Tina has {built} parameters, the cost model says {expected}"
        assert config["tina"]["width"] == 2048 and config["tina"]["depth"] == 12

        peak_kb = int(output.rsplit("peak RSS of any job (kB): ", 1)[1].split()[0])
        # the cost model's memory for this very run (its cut sizes, fp32 on the CPU), as the
        # resources section turns it into mem_mb, covers what each job and the peak used
        on_cpu = {**override, "tina": {**sections["tina"], **override["tina"], "precision": "fp32"}}
        sized = load_config(repo / paper, {k: sections[k] | v for k, v in on_cpu.items()})
        predicted = rule_memory_mb(sized, rule_stages(sized))
        peaks = job_peaks(results)
        for job, used in peaks.items():  # benchmarks and rusage count MiB and KiB
            rule = resource_entry(job.split("/")[0])
            if rule in predicted:  # the others keep the schema's default
                mb = used * 2**20 / 1e6
                assert mb <= predicted[rule], f"{job}: {mb:.0f} MB, predicted {predicted[rule]}"
        assert peak_kb * 1024 / 1e6 <= max(predicted.values()), (peak_kb, predicted)
        job = max(peaks, key=peaks.get)
        record = {
            "config": name,
            "wall_minutes": round(wall / 60, 1),
            "peak_rss_gib": round(peak_kb / 2**20, 1),
            "largest_job": job,
            "largest_job_sampled_gib": round(peaks[job] / 2**10, 1),
            "predicted_gib": round(max(predicted.values()) * 1e6 / 2**30, 1),
            "tina_parameters": built,
        }
        print(json.dumps(record))
        if os.environ.get("PAPER_SHAPE_RECORD"):
            with open(os.environ["PAPER_SHAPE_RECORD"], "a") as f:
                f.write(json.dumps(record) + "\n")
    finally:  # ~30 GB of checkpoints per config: leave the disk as it was
        shutil.rmtree(repo / "results", ignore_errors=True)
