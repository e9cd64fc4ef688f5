"""Scale-out: workflows run through profiles/slurm on a one-node SLURM cluster on localhost.

The module fixture installs Debian's slurm-wlm and munge when missing, starts munged, slurmctld
and slurmd with tests/slurm/start_cluster.sh (partitions "cpu" and "gpu", one pretend GPU) and
stops them by pid afterwards, also when a test fails. It needs root: it writes /etc/slurm.

- A throwaway workflow written here (three rules, one asks for a GPU, one fails): jobs run as
  SLURM jobs in the right partition, with the requested memory, time and GPU; a failed job is
  retried once and reported.
- The project's workflow on config/test.yaml, in a copy of the checkout, outputs under its
  results/test-slurm: TINA_SLURM_TARGET names the target (default: all), TINA_SLURM_TIMEOUT_S
  its time limit in seconds (default 1800). It builds one output of each non-local rule that the
  target runs (so every such rule is submitted at least once, not every job of it), with fewer
  training steps and one zoo shard (PROJECT_OVERRIDES), and checks job states sooner
  (PROJECT_POLLING).
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
START_TIMEOUT_S = 300  # includes apt-get install (about 5 to 15 s), and apt-get update if needed
STOP_TIMEOUT_S = 60
THROWAWAY_TIMEOUT_S = 240
PROJECT_TIMEOUT_S = int(os.environ.get("TINA_SLURM_TIMEOUT_S", "1800"))
PROJECT_RUN = "test-slurm"
# Laid over config/test.yaml in the project test: step counts, and one zoo shard per part (each
# shard is a job of the same two rules), so the DAG has config/test.yaml's rules. The test checks
# plumbing (each rule's job runs as a SLURM job in the right partition and succeeds), not
# numbers: the local workflow tests check those.
PROJECT_OVERRIDES = """\
generic: {steps: 20}
zoo: {shards: 1, steps: 10}
encoder: {projection_steps: 10}
tina: {steps: 10, eval_every: 5}
evaluate: {hypernetwork_steps: 5}
scaling: {steps: 5, net_generic_steps: 10, net_zoo_steps: 5}
"""
# Test-only executor setting (the profile keeps 5 s for users): the first status check 1 s after
# a submission or a finished job; the executor's back-off (+10 s per check while no job finishes,
# up to 180 s) stays, so a job of tens of seconds is noticed a few seconds after it ends.
PROJECT_POLLING = ["--slurm-init-seconds-before-status-checks", "1"]
CHECKOUT_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "results", ".snakemake", "__pycache__", "*.egg-info", ".*_cache"
)

WORDS = ("alpha", "beta")
THROWAWAY_SNAKEFILE = r"""
WORDS = ["alpha", "beta"]


rule all:
    input:
        "out/sum_letters.txt",


rule count_letters:
    output:
        "out/count_letters/{word}.txt",
    threads: 1
    resources:
        gpu=0,
        mem_mb=200,
        runtime=5,
    shell:
        "printf 'letters=%s\\njob=%s\\n' $(printf %s {wildcards.word} | wc -c) $SLURM_JOB_ID"
        " > {output}"


rule sum_letters:
    input:
        expand("out/count_letters/{word}.txt", word=WORDS),
    output:
        "out/sum_letters.txt",
    threads: 1
    resources:
        gpu=1,
        mem_mb=200,
        runtime=5,
    shell:
        "printf 'letters=%s\\njob=%s\\ngpus=%s\\n'"
        " $(awk -F= '/^letters=/ {{s += $2}} END {{print s}}' {input})"
        " $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES > {output}"


rule fail_job:
    output:
        "out/fail_job.txt",
    threads: 1
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        "echo 'fail_job: exiting with status 3' >&2; exit 3"
"""


def _run_helper(script: str, state_dir: Path, timeout_s: int) -> subprocess.CompletedProcess:
    """Run tests/slurm/<script> on state_dir with a hard timeout."""
    return subprocess.run(
        ["bash", str(HELPERS / script), str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start the one-node cluster; yield its state folder (logs, pids); stop it by pid."""
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: start_cluster.sh installs slurm-wlm and munge, writes /etc/slurm "
            "and starts munged, slurmctld and slurmd"
        )
    state_dir = tmp_path_factory.mktemp("slurm-state")
    try:
        started = _run_helper("start_cluster.sh", state_dir, START_TIMEOUT_S)
        print(started.stdout)
        assert started.returncode == 0, f"start_cluster.sh failed:\n{started.stderr}"
        yield state_dir
    finally:
        stopped = _run_helper("stop_cluster.sh", state_dir, STOP_TIMEOUT_S)
        print(stopped.stdout)
        assert stopped.returncode == 0, f"stop_cluster.sh failed:\n{stopped.stderr}"


def _run_snakemake(workdir: Path, args: list[str], timeout_s: int) -> subprocess.CompletedProcess:
    """Run Snakemake in workdir as the README's "Running on a cluster" says, with a hard timeout."""
    command = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE)]
    command += ["--workflow-profile", "none", "--directory", str(workdir), *args]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _submitted_jobs(log: str) -> dict[str, str]:
    """Map each SLURM job id in a Snakemake log to the rule of the job it ran."""
    pattern = r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*?/rule_(\w+)/"
    return dict(re.findall(pattern, log, re.M))


def _local_rules(workflow: Path) -> set[str]:
    """The rules that a copy of the project runs on the login node: all, and its localrules."""
    sources = [workflow / "Snakefile", *sorted((workflow / "rules").glob("*.smk"))]
    local = {"all"}
    for source in sources:
        for names in re.findall(r"^localrules:((?:.*\n)(?:[ \t]+.*\n)*)", source.read_text(), re.M):
            local.update(re.findall(r"\w+", names))
    return local


def _finished_rules(log: str) -> list[str]:
    """The rule of each job that a Snakemake log reports finished, local ones included."""
    return re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", log, re.M)


def _exit_statuses(state_dir: Path) -> dict[str, str]:
    """The exit status of each finished job's batch script, as slurmctld logged it."""
    log = (state_dir / "slurmctld.log").read_text()
    return dict(re.findall(r"_job_complete: JobId=(\d+) WEXITSTATUS (\d+)", log))


def _job_fields(slurm_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (the test cluster keeps finished jobs for an hour)."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", slurm_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _assert_partition_fits(job: dict[str, str]) -> None:
    """A job that asked for a GPU ran in the gpu partition, any other in the cpu partition."""
    wants_gpu = job.get("TresPerJob") == "gres:gpu:1"
    assert job["Partition"] == ("gpu" if wants_gpu else "cpu"), job


def _key_values(path: Path) -> dict[str, str]:
    """A file of key=value lines as a dict."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def throwaway_run(
    slurm_cluster: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """One run of the throwaway workflow: "all" and the failing job together (keep-going)."""
    workdir = tmp_path_factory.mktemp("throwaway")
    (workdir / "Snakefile").write_text(THROWAWAY_SNAKEFILE)
    return workdir, _run_snakemake(workdir, ["all", "out/fail_job.txt"], THROWAWAY_TIMEOUT_S)


def test_throwaway_jobs_run_on_slurm(
    slurm_cluster: Path, throwaway_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    """Three jobs of two rules run as SLURM jobs; the one that asks for a GPU gets one."""
    workdir, result = throwaway_run
    rule_of = _submitted_jobs(result.stderr)
    succeeded = {slurm_id: rule for slurm_id, rule in rule_of.items() if rule != "fail_job"}
    assert sorted(succeeded.values()) == ["count_letters", "count_letters", "sum_letters"]
    counts = {word: _key_values(workdir / f"out/count_letters/{word}.txt") for word in WORDS}
    assert counts["alpha"]["letters"] == "5" and counts["beta"]["letters"] == "4"
    summary = _key_values(workdir / "out/sum_letters.txt")
    assert summary["letters"] == "9"
    assert summary["gpus"] == "0"  # SLURM handed the job its one (pretend) GPU
    assert {counts["alpha"]["job"], counts["beta"]["job"], summary["job"]} == set(succeeded)
    for slurm_id, rule in succeeded.items():
        job = _job_fields(slurm_id)
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0")
        assert job["JobName"].startswith("tina_")  # slurm-jobname-prefix in the profile
        assert job["Comment"].startswith(f"rule_{rule}")
        assert (job["MinMemoryNode"], job["TimeLimit"]) == ("200M", "00:05:00")
        assert job.get("TresPerJob") == ("gres:gpu:1" if rule == "sum_letters" else None)
        _assert_partition_fits(job)


def test_failed_job_is_retried_then_reported(
    slurm_cluster: Path, throwaway_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    """A job that exits 3 runs twice (retries: 1), then Snakemake ends with an error."""
    workdir, result = throwaway_run
    assert result.returncode == 1
    attempts = [id_ for id_, rule in _submitted_jobs(result.stderr).items() if rule == "fail_job"]
    assert len(attempts) == 2
    exit_statuses = _exit_statuses(slurm_cluster)
    for slurm_id in attempts:
        assert f"SLURM-job '{slurm_id}' failed, SLURM status is: 'FAILED'" in result.stderr
        assert exit_statuses[slurm_id] == "1"  # the exit status of Snakemake in the job
        slurm_log = workdir / f".snakemake/slurm_logs/rule_fail_job/{slurm_id}.log"
        assert "fail_job: exiting with status 3" in slurm_log.read_text()
    assert not (workdir / "out/fail_job.txt").exists()


def _one_output_per_rule(summary: str) -> dict[str, str]:
    """The first output of each rule in `snakemake --summary` (output_file, date, rule, ...)."""
    first: dict[str, str] = {}
    for line in summary.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) > 2:
            first.setdefault(fields[2], fields[0])
    return first


def test_project_workflow_runs_on_slurm(slurm_cluster: Path, tmp_path: Path) -> None:
    """The project's workflow on config/test.yaml: one output of each rule that the target runs
    (TINA_SLURM_TARGET, default all); every non-local rule is submitted as a SLURM job and each
    of its jobs succeeds in the right partition.

    It runs in a copy of the checkout, so that edits made meanwhile cannot change the run (a
    job's Snakemake reads the workflow files again). One output per rule instead of the whole
    target, fewer steps, one zoo shard (PROJECT_OVERRIDES): each SLURM job costs two Snakemake
    start-ups (sbatch, then srun), and what the test checks is where and whether each rule's
    jobs run, not how many of them or what they compute (the local workflow tests check that).
    """
    if not (REPO / "Snakefile").exists():
        pytest.skip(f"workflow not ready: {REPO / 'Snakefile'} is missing")
    workflow = tmp_path / "tina"
    shutil.copytree(REPO, workflow, ignore=CHECKOUT_COPY_IGNORE)
    (workflow / "slurm-test.yaml").write_text(PROJECT_OVERRIDES)
    target = os.environ.get("TINA_SLURM_TARGET", "all")
    config = [
        "--configfile",
        "config/test.yaml",
        "slurm-test.yaml",
        "--config",
        f"run={PROJECT_RUN}",
    ]
    summary = _run_snakemake(workflow, [target, *config, "--summary"], 120)
    assert summary.returncode == 0, summary.stderr[-6000:]
    local_rules = _local_rules(workflow)
    outputs = {
        rule: path
        for rule, path in _one_output_per_rule(summary.stdout).items()
        if rule not in local_rules
    }
    assert outputs, summary.stdout[-3000:]
    args = [*outputs.values(), *config]

    result = _run_snakemake(workflow, [*args, *PROJECT_POLLING], PROJECT_TIMEOUT_S)

    assert result.returncode == 0, f"snakemake failed:\n{result.stderr[-6000:]}"
    rule_of = _submitted_jobs(result.stderr)
    finished = _finished_rules(result.stderr)
    assert sorted(rule_of.values()) == sorted(rule for rule in finished if rule not in local_rules)
    assert set(rule_of.values()) == set(outputs)
    exit_statuses = _exit_statuses(slurm_cluster)
    for slurm_id in rule_of:
        assert exit_statuses[slurm_id] == "0"
        _assert_partition_fits(_job_fields(slurm_id))
    results = workflow / "results" / PROJECT_RUN
    assert any(path.is_file() for path in results.rglob("*")), f"nothing under {results}"
    dry_run = _run_snakemake(workflow, [*args, "--dry-run"], 120)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr
