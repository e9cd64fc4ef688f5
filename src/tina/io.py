"""Atomic file output, hashing and logging shared by every stage.

Every artifact is written to a temporary file in the destination folder and renamed into
place, so a killed job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

log = logging.getLogger("tina")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or foreign file raises a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing tensor file: {path}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types on corrupt headers
        raise ValueError(f"corrupt or unreadable tensor file {path}: {err}") from None


def read_metadata(path) -> dict[str, str]:
    """The metadata of a safetensors file; a corrupt or foreign file raises a one-line error."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as err:  # safetensors raises several types on corrupt headers
        raise ValueError(f"corrupt or unreadable tensor file {path}: {err}") from None


def write_csv(path, frame: pd.DataFrame):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_json(path, obj: Any):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable content hash of a JSON-serialisable object (used as a cache key)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def setup_logging(log_file: str | os.PathLike | None = None, level=logging.INFO):
    """Send the ``tina`` logger (and tqdm bars, via :func:`progress`) to ``log_file``."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(log_file, mode="w")]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


class _LogStream:
    """A file-like object that forwards tqdm's output to the ``tina`` logger's handlers."""

    def write(self, text: str):
        text = text.strip("\r\n ")
        if text:
            for handler in logging.getLogger().handlers:
                stream = getattr(handler, "stream", None)
                if stream is not None:
                    stream.write(text + "\n")
                    stream.flush()

    def flush(self):
        pass


def progress(iterable=None, **kwargs):
    """A tqdm progress bar written to the step's log (plain lines, a few per step)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("mininterval", 5.0)
    kwargs.setdefault("ascii", True)
    kwargs.setdefault("dynamic_ncols", False)
    kwargs.setdefault("ncols", 100)
    return tqdm(iterable, file=_LogStream(), **kwargs)


def set_threads(threads: int):
    """Torch's CPU threads for this step; subnormal floats are flushed to zero as well.

    Small nets trained to a plateau produce subnormal gradients and Adam moments, which make
    CPU arithmetic several times slower; flushing them changes results by less than float32
    resolution of any normal number."""
    torch.set_num_threads(max(1, int(threads)))
    torch.set_flush_denormal(True)


def run_step(snakemake, step, *args, **kwargs):
    """Run one rule's package function: log to the rule's log, set threads, time it.

    ``step(*args, **kwargs)`` does the work; exceptions are logged with their traceback and
    re-raised so Snakemake marks the job failed (its outputs are then removed).
    """
    import time

    setup_logging(snakemake.log[0] if snakemake.log else None)
    set_threads(snakemake.threads)
    name = getattr(snakemake, "rule", step.__name__)
    start = time.perf_counter()
    try:
        result = step(*args, **kwargs)
    except Exception:
        log.exception("step %s failed", name)
        raise
    log.info("step %s finished in %.1f s", name, time.perf_counter() - start)
    return result
