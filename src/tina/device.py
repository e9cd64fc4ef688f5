"""Where the heavy steps run: picking a torch device and mixed precision on GPUs.

The config chooses ``device: auto | cpu | cuda`` (``auto`` = the GPU when torch sees one) and
``tina.precision: fp32 | bf16 | fp16``. Mixed precision applies on CUDA only: on the CPU every
step runs in float32, so a CPU run is the same whatever precision the config names.

A step that picks a GPU also asks torch for reproducible CUDA (:func:`reproducible_cuda`); the
CPU is left as it is, so CPU results do not change.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def reproducible_cuda() -> None:
    """Seeded CUDA runs as reproducible as torch allows: deterministic algorithms (an op that
    has none runs anyway and logs a warning) and cuBLAS's fixed workspace. cuBLAS reads
    ``CUBLAS_WORKSPACE_CONFIG`` when it starts, so this runs before the first GPU operation; a
    value already in the environment is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(pref: str = "auto", index: int = 0) -> torch.device:
    """The device a step runs on: ``cuda:<index>`` when asked for or available, else the CPU.

    ``pref`` is ``auto`` (a GPU when torch sees one), ``cpu`` or ``cuda`` (a GPU, or an error
    that says why there is none). ``index`` picks the GPU (a process's local rank). Picking a
    GPU makes CUDA reproducible (:func:`reproducible_cuda`).
    """
    if pref not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {pref!r}")
    if pref == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if pref == "auto":
            return torch.device("cpu")
        raise RuntimeError(
            "device: cuda was asked for but torch sees no CUDA GPU (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); run on a GPU "
            "node with a CUDA build of torch, or set device: auto (or cpu) in the config"
        )
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise RuntimeError(
            f"GPU {index} was asked for but torch sees {count} GPU(s) (CUDA_VISIBLE_DEVICES="
            "limits them); lower tina.devices or give the job more GPUs"
        )
    reproducible_cuda()
    return torch.device("cuda", index)


def check_precision(precision: str) -> None:
    """Raise a ValueError unless ``precision`` is one of fp32, bf16, fp16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")


class MixedPrecision:
    """Autocast and loss scaling for one device and precision (a no-op in fp32 or on the CPU).

    A training step reads::

        with amp.autocast():
            out = model(...)
        amp.backward(loss)
        amp.unscale(optimizer)  # before clipping gradients
        amp.step(optimizer)

    fp16 scales the loss (``torch.amp.GradScaler``) so small gradients survive; bf16 has
    float32's range and needs no scaling.
    """

    def __init__(self, device: torch.device | str, precision: str = "fp32"):
        check_precision(precision)
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision] if self.device.type == "cuda" else None
        self.precision = precision if self.dtype is not None else "fp32"
        fp16 = self.dtype is torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the enclosed forward pass in the reduced precision (as is in fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, on the scaled loss in fp16."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (fp16), e.g. before clipping them."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; in fp16 a step with inf/nan gradients is skipped."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()
