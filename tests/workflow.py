"""Helpers for workflow tests: a copy of the repository in a temporary folder, and Snakemake
runs in it (to the end, or started in their own process group to be killed mid-job).

Every run has a hard timeout and keeps Snakemake's combined output, so a failing test can show
its tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a workflow run needs from the checkout (not results, caches or the venv).
COPIED = ("Snakefile", "rules", "src", "config", "envs", "profiles", "report", "pyproject.toml")
TINY_CONFIG = "config/test.yaml"
TINY_RESULTS = "results/test"
TIMEOUT_S = 900  # a from-scratch tiny run takes 2-3 min on 2 idle cores
TAIL_CHARS = 4000
# Tables whose numbers are timings (they differ from run to run by nature).
TIMING_TABLES = ("performance", "stages")


def copy_repo(target: Path) -> Path:
    """Copy the workflow's files from the checkout into ``target`` and return it."""
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)
    return target


def snakemake_command(*args: str) -> list[str]:
    """The Snakemake command line of this interpreter (the venv's Snakemake)."""
    return [sys.executable, "-m", "snakemake", *map(str, args)]


def tiny_args(*targets: str, cores: int = 2) -> list[str]:
    """Arguments of a run of the tiny config: targets first, then cores and the config file."""
    return [*(targets or ("all",)), "--cores", str(cores), "--configfile", TINY_CONFIG]


def tail(text: str, chars: int = TAIL_CHARS) -> str:
    """The end of Snakemake's output, for an assertion message."""
    return text[-chars:]


class Background:
    """A Snakemake run in its own process group (session), its output written to a file.

    ``kill`` sends SIGKILL to the whole group: Snakemake and every job it started, as a power
    cut or an out-of-memory killer would, so nothing gets to clean up.
    """

    def __init__(self, workdir: Path, *args: str, name: str = "snakemake", env: dict | None = None):
        self.output_path = workdir / f"{name}.out"
        self._output = open(self.output_path, "w")  # noqa: SIM115 (closed in wait/kill)
        self.process = subprocess.Popen(
            snakemake_command(*args),
            cwd=workdir,
            env=env,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.monotonic()

    @property
    def output(self) -> str:
        return self.output_path.read_text()

    def kill(self) -> None:
        """SIGKILL the process group and reap Snakemake."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self._output.close()

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        """Wait for the run to end; return its exit code. Past ``timeout`` seconds from its
        start, kill it and fail with the tail of its output."""
        try:
            code = self.process.wait(timeout=max(1.0, timeout - self.elapsed()))
        except subprocess.TimeoutExpired:
            self.kill()
            message = f"Snakemake ran past {timeout:.0f} s:\n{tail(self.output)}"
            raise AssertionError(message) from None
        self._output.close()
        return code

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_for(self, ready: Callable[[], bool], what: str, poll_s: float = 0.05) -> None:
        """Poll ``ready()`` until it is true; fail if the run ends first or times out."""
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(f"run ended before {what}:\n{tail(self.output)}")
            if self.elapsed() > TIMEOUT_S:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{tail(self.output)}")
            time.sleep(poll_s)


def run_snakemake(
    workdir: Path, *args: str, timeout: float = TIMEOUT_S, name: str = "snakemake"
) -> tuple[int, str]:
    """Run Snakemake in ``workdir`` to the end; return its exit code and combined output (also
    kept in ``workdir/<name>.out``). Past ``timeout`` its whole process group is killed."""
    run = Background(workdir, *args, name=name)
    return run.wait(timeout), run.output


def unlock(workdir: Path) -> None:
    """Remove the lock that a killed Snakemake leaves (what its LockException asks for)."""
    code, output = run_snakemake(workdir, "--unlock", *tiny_args(), timeout=300, name="unlock")
    assert code == 0, tail(output)


def process_group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_FINISHED = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)", re.MULTILINE)
_STATS_ROW = re.compile(r"^(\w+)\s+(\d+)$")


def jobs_finished(output: str) -> Counter[str]:
    """How many jobs of each rule Snakemake's output says finished in this run."""
    return Counter(_FINISHED.findall(output))


def jobs_planned(output: str) -> Counter[str]:
    """The jobs of each rule that Snakemake planned to run (its first "Job stats" table)."""
    lines = output.split("Job stats:", 1)[1].splitlines() if "Job stats:" in output else []
    planned: Counter[str] = Counter()
    for line in lines[3:]:  # after the header and the dashes
        row = _STATS_ROW.match(line.strip())
        if row is None or row[1] == "total":
            break
        planned[row[1]] = int(row[2])
    return planned


def incomplete_markers(workdir: Path) -> list[Path]:
    """Snakemake's markers of outputs whose job started but did not finish."""
    folder = workdir / ".snakemake" / "incomplete"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def compared_tables(results: Path) -> dict[str, bytes]:
    """Bytes of every table CSV of a run, leaving out the timing tables and ``seconds`` columns
    (those measure this machine, not the method)."""
    import pandas as pd

    tables = {}
    for path in sorted((results / "tables").glob("*.csv")):
        if path.stem in TIMING_TABLES:
            continue
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        timing = [c for c in frame.columns if "seconds" in c]
        tables[path.name] = frame.drop(columns=timing).to_csv(index=False).encode()
    return tables


def compared_summary(results: Path) -> dict:
    """The run's summary.json without its timings (keys naming seconds)."""
    import json

    def drop_timings(node):
        if isinstance(node, dict):
            return {k: drop_timings(v) for k, v in node.items() if "seconds" not in k}
        return node

    return drop_timings(json.loads((results / "summary.json").read_text()))
