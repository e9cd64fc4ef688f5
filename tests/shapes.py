"""Synthetic images for tests: coloured shapes on noise, 12 classes named like prompts."""

import itertools

import torch

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 220)}
SHAPES = ("square", "circle", "cross", "triangle")
NAMES = [f"{colour} {shape}" for shape, colour in itertools.product(SHAPES, COLOURS)]


def shape_images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 16x16 images of every class of NAMES: a jittered coloured shape on noise."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    images, labels = [], []
    for label, (shape, colour) in enumerate(itertools.product(SHAPES, COLOURS)):
        for _ in range(per_class):
            cx, cy = (7.5 + torch.rand(2, generator=g) * 4 - 2).tolist()
            r = 3.5 + 2 * torch.rand(1, generator=g).item()
            dx, dy = xs - cx, ys - cy
            inside = {
                "square": (dx.abs() <= r) & (dy.abs() <= r),
                "circle": dx**2 + dy**2 <= r**2,
                "cross": ((dx.abs() <= r / 3) & (dy.abs() <= r))
                | ((dy.abs() <= r / 3) & (dx.abs() <= r)),
                "triangle": (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2),
            }[shape]
            background = torch.rand(3, 1, 1, generator=g) * 90
            background = background + torch.randn(3, 16, 16, generator=g) * 12
            rgb = torch.tensor(COLOURS[colour], dtype=torch.float32).view(3, 1, 1)
            rgb = rgb + torch.randn(3, 1, 1, generator=g) * 15
            images.append(torch.where(inside, rgb, background).clamp(0, 255).round())
            labels.append(label)
    return torch.stack(images).to(torch.uint8), torch.tensor(labels)
