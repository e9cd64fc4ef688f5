"""Data-parallel Tina training over several processes (one per GPU, or several on the CPU).

Every process draws the same global batch (their generators are seeded alike), computes the
loss of its own contiguous slice normalised by the global batch's weight, and the gradients are
summed over processes before the optimiser step. The summed gradient is the whole batch's, so
``tina.devices = N`` trains the same model as one process, up to float rounding, with each
process doing 1/N of the work. Only rank 0 validates and writes outputs.

Launch: ``python -m torch.distributed.run --standalone --nproc-per-node N -m tina.distributed
job.json`` (one node; :func:`launch` does this for the ``train_tina`` rule). ``job.json`` names
the inputs, outputs, config section, seed, device preference and threads; see :func:`run_job`.
Backend: NCCL when the processes run on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from tina.device import pick_device
from tina.io import set_threads, write_csv
from tina.sampling import save_tina
from tina.train import train_tina_stage

log = logging.getLogger("tina.distributed")

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 validates while the other ranks wait in the next all-reduce: allow for long validations.
TIMEOUT = timedelta(minutes=60)
BUCKET_NUMEL = 1 << 24  # gradient values summed per all-reduce call


@dataclass
class Distributed:
    """This process's place in a data-parallel group: rank, group size and its device."""

    rank: int
    world: int
    device: torch.device
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs and writes outputs."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Distributed:
        """Join the group that torchrun started (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

        ``device`` is the config's preference: on GPUs each process takes ``cuda:<LOCAL_RANK>``
        and the group talks over NCCL; on the CPU over gloo.
        """
        missing = [name for name in ENV_VARS if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"not started by torchrun: {', '.join(missing)} not set; launch with "
                "`python -m torch.distributed.run --standalone --nproc-per-node N "
                "-m tina.distributed job.json`"
            )
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        chosen = pick_device(device, local_rank)
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        tdist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
        return cls(rank, world, chosen, local_rank)

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of ``n`` samples."""
        if n % self.world:
            raise ValueError(
                f"tina.batch_size = {n} does not split over {self.world} processes "
                f"(tina.devices): make it a multiple of {self.world}"
            )
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def sum_gradients(self, model: nn.Module, bucket_numel: int = BUCKET_NUMEL) -> None:
        """Sum every parameter's gradient over all ranks (all-reduce, in buckets).

        A parameter without a gradient on some rank counts as zero there; it stays without a
        gradient only when no rank has one, as in a single process on the whole batch.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        present = self.all_sum(
            torch.tensor([p.grad is not None for p in params], device=self.device).float()
        )
        for bucket in buckets(list(zip(params, present.tolist(), strict=True)), bucket_numel):
            flat = torch.cat(
                [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p, _ in bucket]
            )
            tdist.all_reduce(flat)
            offset = 0
            for p, count in bucket:
                summed = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
                if count == 0:
                    p.grad = None
                elif p.grad is None:
                    p.grad = summed.clone()
                else:
                    p.grad.copy_(summed)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over all ranks (a new tensor on this rank's device)."""
        total = tensor.detach().to(self.device, copy=True)
        tdist.all_reduce(total)
        return total

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.device.type == "cuda":
            tdist.barrier(device_ids=[self.device.index])
        else:
            tdist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if tdist.is_initialized():
            tdist.destroy_process_group()


def buckets(items: list, numel: int) -> Iterator[list]:
    """Consecutive groups of (parameter, flag) pairs holding about ``numel`` values each."""
    bucket, size = [], 0
    for item in items:
        bucket.append(item)
        size += item[0].numel()
        if size >= numel:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


# --------------------------------------------------------------------------- launching
def process_count(devices: int, gpus: int = 0) -> int:
    """Processes to train with: ``tina.devices``, or the job's GPUs when it was given more."""
    return max(1, int(devices), int(gpus or 0))


def launch(job: dict, processes: int) -> None:
    """Run :func:`run_job` on ``processes`` processes through torchrun; wait for them.

    The processes' log lines are forwarded to this process's log (rank 0 logs progress, the
    others only warnings). Raises RuntimeError when any process fails.
    """
    threads = max(1, int(job.get("threads", 1)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="tina-ddp-") as folder:
        job_file = Path(folder) / "job.json"
        job_file.write_text(json.dumps(job))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", "tina.distributed", str(job_file),
        ]  # fmt: skip
        log.info("training on %d processes: %s", processes, " ".join(command))
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc:
            for line in proc.stdout:
                log.info("%s", line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training on {processes} processes failed (torchrun exit code "
            f"{proc.returncode}); the processes' messages are in the lines above"
        )


def run_job(job: dict, dist: Distributed) -> None:
    """Train Tina as one rank of ``dist``; rank 0 writes the checkpoint and history.

    ``job``: ``inputs`` (the train_tina rule's input paths by name), ``outputs`` (``model``,
    ``history``), ``tina`` (the config section), ``seed``, ``encoder`` (the config section),
    ``shots`` (image prompts' shot counts), ``threads`` (per process) and
    ``meta`` (entries for the checkpoint's metadata).
    """
    set_threads(job.get("threads", 1))
    inputs = types.SimpleNamespace(**job["inputs"])
    tina, history = train_tina_stage(
        inputs, job["tina"], job["seed"], encoder=job["encoder"], shots=job["shots"], dist=dist
    )
    tina.meta.update(job.get("meta", {}))
    if dist.is_main:
        save_tina(tina, job["outputs"]["model"])
        write_csv(job["outputs"]["history"], history)
    dist.barrier()


def _setup_rank_logging(rank: int) -> None:
    """Rank 0 logs progress to stderr, the other ranks only warnings; lines name the rank."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry of each torchrun process: ``python -m tina.distributed job.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m torch.distributed.run ... -m tina.distributed job.json")
    job = json.loads(Path(args[0]).read_text())
    dist = Distributed.from_env(job.get("device", "auto"))
    _setup_rank_logging(dist.rank)
    try:
        run_job(job, dist)
    finally:
        dist.close()


if __name__ == "__main__":
    main()
