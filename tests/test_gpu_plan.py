"""The jobs' plan, read from Snakemake's DAG (tests/dag_jobs.py) without running anything:

- each paper config with ``device: cuda`` (planned on a machine without a GPU, on the fake data
  and tiny CLIP of tests/test_paper.py): every job that trains or runs a network takes the
  device as a param and asks for a GPU, and no job declares less memory than the cost model's
  peak for it (:func:`required_mem_mb`);
- with ``device: cpu`` (the default config, and CIFAR-100's) no job asks for a GPU;
- the default config's jobs ask for the threads, memory and time that the rules declared as
  constants before they read the config's ``resources`` section.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_paper import FAKE_DATA, PAPER, copy_repo, tiny_clip, write_yaml  # noqa: F401

from tina.config import load_config, validate_config
from tina.resources import resource_entry, rule_memory_mb, rule_stages

ROOT = Path(__file__).resolve().parents[1]
# Rules whose jobs train or run a network (all others must not ask for a GPU).
NETWORK_RULES = {
    "train_generic", "finetune_pmodels", "finetune_eval_pmodels", "diagnose_zoo", "embed_prompts",
    "fit_image_projection", "train_tina", "evaluate_baselines", "evaluate_experiment",
    "evaluate_novelty", "scale_tasks", "scale_width", "scale_net",
}  # fmt: skip
# (threads, mem_mb, runtime) that each rule declared as constants before the resources section.
FORMER_CONSTANTS = {
    "prepare_data": (1, 4000, 30), "split_tasks": (1, 1000, 5), "train_generic": (2, 4000, 60),
    "finetune_pmodels": (1, 3000, 60), "diagnose_zoo": (1, 3000, 30),
    "embed_prompts": (2, 3000, 20), "fit_image_projection": (1, 3000, 20),
    "choose_grounding": (1, 3000, 20), "train_tina": (1, 6000, 120),
    "evaluate_baselines": (1, 3000, 30), "evaluate_experiment": (1, 3000, 20),
    "evaluate_novelty": (1, 3000, 20), "scale_tasks": (1, 4000, 60),
    "scale_width": (1, 4000, 60), "scale_net": (1, 4000, 90), "make_report": (1, 2000, 10),
    "make_summary": (1, 2000, 10), "estimate_cost": (1, 2000, 10),
    "aggregate_seeds": (1, 2000, 10),
}  # fmt: skip


def required_mem_mb(config: dict) -> dict[str, int]:
    """The least memory (MB) a job of each rule that the cost model sizes needs under
    ``config``: its stages' largest peak plus the process, CUDA context and data set
    (:func:`tina.resources.rule_memory_mb`)."""
    return rule_memory_mb(config, rule_stages(config))


@pytest.fixture(scope="module")
def plans(tmp_path_factory, tiny_clip) -> dict[tuple[str, str], list[dict]]:  # noqa: F811
    """The jobs of every paper config under ``device: cuda``, of CIFAR-100's under ``cpu`` and
    of the default config, planned side by side in a copy of the workflow."""
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    script = str(ROOT / "tests" / "dag_jobs.py")
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = {("default", "cpu"): subprocess.Popen([sys.executable, script, str(repo)], **pipe)}
    for path in PAPER:
        root = FAKE_DATA[path.stem](repo / "data")
        for device in ("cuda", "cpu") if path.stem == "cifar100" else ("cuda",):
            override = {
                "device": device,
                "data": {"root": str(root)},
                "encoder": {"path": str(tiny_clip)},
            }
            extra = write_yaml(repo / f"override-{path.stem}-{device}.yaml", override)
            command = [sys.executable, script, str(repo), str(path), str(extra)]
            runs[path.stem, device] = subprocess.Popen(command, **pipe)
    jobs = {}
    for key, run in runs.items():
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, f"{key}: {err[-3000:]}"
        jobs[key] = json.loads(out)
    return jobs


@pytest.mark.parametrize("name", [p.stem for p in PAPER])
def test_every_network_job_asks_for_a_gpu_on_cuda(plans, name):
    jobs = plans[name, "cuda"]
    assert {job["rule"] for job in jobs} >= NETWORK_RULES
    for job in jobs:
        gpu = job["resources"].get("gpu", 0)
        if job["rule"] in NETWORK_RULES:
            assert gpu >= 1, f"{name}: {job['rule']} asks for no GPU"
            assert "device" in job["params"], f"{name}: {job['rule']} has no device param"
        else:
            assert gpu == 0, f"{name}: {job['rule']} asks for {gpu} GPU(s)"


@pytest.mark.parametrize("name", [p.stem for p in PAPER])
def test_no_job_declares_less_memory_than_it_needs(plans, name):
    required = required_mem_mb(load_config(ROOT / "config" / "paper" / f"{name}.yaml"))
    assert {resource_entry(rule) for rule in NETWORK_RULES} <= set(required)
    for job in plans[name, "cuda"]:
        entry = resource_entry(job["rule"])
        if entry not in required:  # all, split_tasks, the report: the schema's defaults
            continue
        need, declared = required[entry], job["resources"]["mem_mb"]
        assert declared >= need, f"{name}: {job['rule']} declares {declared} MB, needs {need}"


@pytest.mark.parametrize("name", ["cifar100", "default"])
def test_no_job_asks_for_a_gpu_on_the_cpu(plans, name):
    asking = {job["rule"] for job in plans[name, "cpu"] if job["resources"].get("gpu", 0)}
    assert not asking, f"{name} with device: cpu: {sorted(asking)} ask for a GPU"


def test_the_default_resources_are_the_former_constants(plans):
    section = validate_config({})["resources"]
    assert {
        rule: (value["threads"], value["mem_mb"], value["runtime"])
        for rule, value in section.items()
    } == FORMER_CONSTANTS
    for job in plans["default", "cpu"]:
        if job["rule"] == "all":
            continue
        threads, mem_mb, runtime = FORMER_CONSTANTS[resource_entry(job["rule"])]
        declared = (job["threads"], job["resources"]["mem_mb"], job["resources"]["runtime"])
        assert declared == (threads, mem_mb, runtime), job["rule"]
