"""A user's own pictures: five kinds of object that no data set of the workflow has, drawn in
this file's own style (flat silhouettes, two colours, noise), to hand to ``tina generate
--images`` and ``tina predict``.

Run as a script on a finished run to measure it (writes the pictures under a temporary folder):

    .venv/bin/python tests/pictures.py results/default

prints the accuracy of the generated classifier on 30 other pictures of each class, for pictures
and sampler drawn with each of ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

PATTERNS = ("arrow", "kite", "crescent", "ladder", "ring")
"""Class names: none is a class of the workflow's data sets (checked by the tests)."""

_CANVAS = 64  # drawn large, then shrunk with antialiasing to the run's image size


def _outline(name: str) -> list[list[tuple[float, float]]] | None:
    """Polygons of ``name`` in unit coordinates (-1..1); None for the round shapes."""
    if name == "arrow":
        return [
            [
                (-0.9, -0.25),
                (0.2, -0.25),
                (0.2, -0.6),
                (0.9, 0),
                (0.2, 0.6),
                (0.2, 0.25),
                (-0.9, 0.25),
            ]
        ]
    if name == "kite":
        return [
            [(0, -0.95), (0.55, -0.2), (0, 0.6), (-0.55, -0.2)],
            [(-0.05, 0.6), (0.05, 0.6), (0.05, 0.95), (-0.05, 0.95)],
        ]
    if name == "ladder":
        rails = [
            [(x - 0.1, -0.95), (x + 0.1, -0.95), (x + 0.1, 0.95), (x - 0.1, 0.95)]
            for x in (-0.55, 0.55)
        ]
        rungs = [
            [(-0.55, y - 0.07), (0.55, y - 0.07), (0.55, y + 0.07), (-0.55, y + 0.07)]
            for y in (-0.6, -0.2, 0.2, 0.6)
        ]
        return rails + rungs
    return None


INKS = {
    "arrow": (200, 40, 40),
    "kite": (40, 90, 210),
    "crescent": (235, 200, 40),
    "ladder": (120, 75, 35),
    "ring": (60, 170, 70),
}
"""Each object's own colour in ``colours="object"`` pictures (as a user's photos of one object:
a red arrow sign, a blue kite, ...), varied by a jitter of up to 25 per channel."""


def _draw(name: str, g: torch.Generator, colours: str) -> Image.Image:
    """One picture of ``name`` on a canvas: random position, size and angle; the ink is the
    object's own colour (``colours="object"``) or any colour (``"random"``), the paper a random
    colour apart from the ink."""
    if colours == "object":
        ink = torch.tensor(INKS[name], dtype=torch.float32)
        ink = (ink + (torch.rand(3, generator=g) - 0.5) * 50).clamp(0, 255)
    elif colours == "random":
        ink = torch.rand(3, generator=g) * 255
    else:
        raise ValueError(f"colours must be 'object' or 'random', not {colours!r}")
    paper = (ink + 96 + torch.rand(3, generator=g) * 64) % 256  # a contrast to the ink
    image = Image.new("RGB", (_CANVAS, _CANVAS), tuple(int(v) for v in paper))
    draw = ImageDraw.Draw(image)
    scale = _CANVAS * (0.3 + 0.12 * torch.rand(1, generator=g).item())
    cx, cy = (_CANVAS / 2 + (torch.rand(2, generator=g) - 0.5) * _CANVAS * 0.2).tolist()
    angle = (torch.rand(1, generator=g).item() - 0.5) * math.pi / 4
    colour = tuple(int(v) for v in ink)

    def place(x: float, y: float) -> tuple[float, float]:
        c, s = math.cos(angle), math.sin(angle)
        return cx + scale * (c * x - s * y), cy + scale * (s * x + c * y)

    polygons = _outline(name)
    if polygons is not None:
        for polygon in polygons:
            draw.polygon([place(x, y) for x, y in polygon], fill=colour)
    elif name == "ring":
        draw.ellipse([cx - scale, cy - scale, cx + scale, cy + scale], fill=colour)
        inner = scale * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=image.getpixel((0, 0)))
    elif name == "crescent":
        draw.ellipse([cx - scale, cy - scale, cx + scale, cy + scale], fill=colour)
        dx, dy = place(0.55, -0.25)
        draw.ellipse(
            [dx - scale * 0.85, dy - scale * 0.85, dx + scale * 0.85, dy + scale * 0.85],
            fill=image.getpixel((0, 0)),
        )
    else:
        raise ValueError(f"unknown pattern {name!r}")
    return image


def render(
    per_class: int, seed: int, size: int = 16, colours: str = "object"
) -> dict[str, torch.Tensor]:
    """uint8 pictures ``[per_class, 3, size, size]`` of every class, with pixel noise
    (``colours``: see :func:`_draw`)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in PATTERNS:
        pictures = []
        for _ in range(per_class):
            small = _draw(name, g, colours).resize((size, size), Image.LANCZOS)
            pixels = torch.from_numpy(np.asarray(small, dtype=np.float32)).permute(2, 0, 1)
            noise = torch.randn(3, size, size, generator=g) * 8
            pictures.append((pixels + noise).clamp(0, 255).round())
        out[name] = torch.stack(pictures).to(torch.uint8)
    return out


def write_folder(pictures: dict[str, torch.Tensor], folder: Path) -> dict[str, list[Path]]:
    """``folder/<class>/<i>.png`` for every picture; the paths by class."""
    paths = {}
    for name, images in pictures.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        paths[name] = []
        for i, image in enumerate(images):
            path = folder / name / f"{i}.png"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
            paths[name].append(path)
    return paths


def measure(run: str | Path, work: Path, shots: int = 8, test: int = 30, seed: int = 0) -> float:
    """Accuracy of the classifier that ``tina generate --images`` makes from ``shots`` pictures
    of each class, on ``test`` other pictures of each through ``tina predict`` (both run as the
    command line, in a new process)."""
    write_folder(render(shots, seed=seed), work / "prompt")
    others = write_folder(render(test, seed=seed + 1000), work / "test")
    model = work / "objects.safetensors"
    tina = [sys.executable, "-m", "tina.cli"]
    generate = [
        *tina, "generate", "--run", str(run), "--classes", ",".join(PATTERNS),
        "--images", str(work / "prompt"), "--out", str(model), "--seed", str(seed),
    ]  # fmt: skip
    subprocess.run(generate, check=True, capture_output=True, text=True)
    paths = [str(p) for name in PATTERNS for p in others[name]]
    out = subprocess.run(
        [*tina, "predict", "--model", str(model), *paths],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    predicted = dict(line.split("\t") for line in out.splitlines())
    truth = {str(p): name for name in PATTERNS for p in others[name]}
    return sum(predicted[path] == name for path, name in truth.items()) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory, e.g. results/default")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scores = [measure(args.run, Path(tmp) / str(s), seed=s) for s in range(args.seeds)]
    print("accuracy per seed:", " ".join(f"{a:.3f}" for a in scores))
    print(f"mean {sum(scores) / len(scores):.3f}")


if __name__ == "__main__":
    main()
