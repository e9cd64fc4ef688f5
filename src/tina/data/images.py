"""Image utilities: the float scale of the nets, resizing arrays to RGB squares, reading files.

Every data set is stored as RGB uint8 images ``[N, 3, S, S]``; :func:`to_float` gives the nets
their input scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tina.io import progress


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images as float32 at the input scale of the nets.

    uint8 images map to [-1, 1] (``x / 127.5 - 1``); any other dtype is taken as already on
    that scale (float images, e.g. augmented ones) and is only cast to float32.
    """
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    return images.float()


def to_rgb_size(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, H, W], [N, H, W, 3] or [N, 3, H, W] -> uint8 [N, 3, size, size]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk].float()
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)
        out.append(batch.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, 3, size, size, dtype=torch.uint8)


def read_image(path: Path, size: int) -> torch.Tensor:
    """A picture file as uint8 [3, size, size]: centre-cropped to a square, then resized."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def read_images(paths: list[Path], size: int, desc: str) -> torch.Tensor:
    """Picture files as uint8 [N, 3, size, size] (see :func:`read_image`), with progress."""
    if not paths:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.stack([read_image(p, size) for p in progress(paths, desc=desc)])
