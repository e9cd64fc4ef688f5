"""Every job of a workflow's DAG with what it asks the scheduler for, as JSON on stdout.

    python tests/dag_jobs.py <workdir> <configfile>...

plans ``all`` (every job, as if nothing were built) through Snakemake's API and prints one
object per job: its rule, threads, numeric resources (mem_mb, runtime, gpu, ...) and param
names. A dry run's log does not show resources, so the GPU plan tests read them here; they run
it in a subprocess, as Snakemake changes the process's working directory and environment.
"""

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    Quietness,
    ResourceSettings,
)

# More cores than any rule asks for, so that no job's threads are scaled down.
CORES = 1024


def dag_jobs(workdir: Path, configfiles: list[Path]) -> list[dict]:
    """The jobs of target ``all`` of the workflow in ``workdir`` under ``configfiles``."""
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            snakefile=workdir / "Snakefile",
            workdir=workdir,
            resource_settings=ResourceSettings(cores=CORES),
            config_settings=ConfigSettings(configfiles=configfiles),
        )
        workflow_api.dag(DAGSettings(targets={"all"}))
        workflow = workflow_api._workflow  # the API has no public view of the planned jobs
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        return [
            {
                "rule": job.rule.name,
                "threads": job.threads,
                "resources": {
                    name: value
                    for name, value in job.resources.items()
                    if isinstance(value, int | float) and not name.startswith("_")
                },
                "params": sorted(job.params.keys()),
            }
            for job in workflow.dag.jobs
        ]


if __name__ == "__main__":
    workdir, *configs = sys.argv[1:]
    print(json.dumps(dag_jobs(Path(workdir).resolve(), [Path(c).resolve() for c in configs])))
