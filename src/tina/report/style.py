"""How results are shown: readable names, the order of methods and splits, and method colours.

Each method keeps one colour in every figure; the colours come from seaborn's palettes, loaded
only when a figure asks for one (tables and the summary need no plotting library).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterable, Sequence

METHOD_ORDER = (
    "tina",
    "pmodel",
    "generic_selection",
    "base",
    "imprint",
    "imprint_selection",
    "logistic_head",
    "finetune_shots",
    "retrieval",
    "ridge",
    "hypernetwork",
    "chance",
    "majority",
)
METHOD_LABELS = {
    "tina": "Tina",
    "pmodel": "p-model (fine-tuned)",
    "generic_selection": "generic + selection",
    "base": "Tina's base (grounded prompt, no Tina)",
    "imprint": "imprint",
    "imprint_selection": "imprint + selection",
    "logistic_head": "logistic head on the shots",
    "finetune_shots": "fine-tuning on the shots",
    "retrieval": "retrieval (nearest p-model)",
    "ridge": "ridge regression",
    "hypernetwork": "hypernetwork",
    "chance": "chance",
    "majority": "majority class",
}
SPLIT_ORDER = ("test_id", "test_ood", "test_kway", "val")
SPLIT_LABELS = {
    "test_id": "test, in-distribution",
    "test_ood": "test, out-of-distribution",
    "test_kway": "test, k-way",
    "val": "validation",
}
EXPERIMENT_TITLES = {
    "names": "Prompts with class names",
    "descriptions": "Prompts with class descriptions",
    "image_prompts": "Image prompts",
    "kway": "Tasks with fewer classes (k-way)",
    "unseen": "Tasks with unseen classes",
    "order": "Sensitivity to the order of classes",
    "scaling_tasks": "Scaling the number of training tasks",
    "scaling_width": "Scaling the diffusion model",
    "scaling_net": "Scaling the generated network",
    "sampler": "Sampler: accuracy against generation time",
    "novelty": "Novelty of generated models",
}
SETTING_LABELS = {
    "names": "prompt",
    "descriptions": "prompt",
    "image_prompts": "images per class (shots)",
    "kway": "classes per task",
    "unseen": "unseen classes per task",
    "order": "class order",
    "scaling_tasks": "training tasks",
    "scaling_width": "diffusion model width",
    "scaling_net": "generated network size (parameters)",
    "sampler": "sampler",
}
#: Index of each method's colour in seaborn's ``colorblind`` palette (``None``: light grey).
#: The palette has ten colours for thirteen methods, so the image-prompt baselines reuse the
#: colours of the regression baselines, which are never recorded beside them (the baselines run
#: on named tasks, the shot methods on image prompts only): every experiment's methods differ.
METHOD_PALETTE_INDEX = {
    "tina": 0,
    "pmodel": 2,
    "generic_selection": 1,
    "base": 9,  # light blue, beside Tina's blue: Tina's own starting point
    "imprint": 3,
    "imprint_selection": 8,
    "logistic_head": 5,  # as ridge (names, k-way, unseen only): both fit a linear map
    "finetune_shots": 6,  # as hypernetwork (names, k-way, unseen only)
    "retrieval": 4,
    "ridge": 5,
    "hypernetwork": 6,
    "chance": 7,
    "majority": None,
}
_GREY = (0.78, 0.78, 0.78)


def natural_key(text: str) -> tuple:
    """Sort key that orders ``shots=4`` before ``shots=16`` and ``k=2`` before ``k=10``."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def ordered(values: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """Unique ``values``: those in ``order`` first, in that order, then the rest naturally."""
    unique = set(values)
    known = [v for v in order if v in unique]
    return known + sorted(unique - set(order), key=natural_key)


def method_label(method: str) -> str:
    """Readable name of ``method`` for legends and tables."""
    return METHOD_LABELS.get(method, method.replace("_", " "))


@functools.cache
def _palettes() -> tuple[dict, list]:
    """The method colours and the palette of unknown methods (seaborn is imported here only)."""
    import seaborn as sns

    base = sns.color_palette("colorblind", 10)
    colours = {
        method: _GREY if index is None else base[index]
        for method, index in METHOD_PALETTE_INDEX.items()
    }
    return colours, sns.color_palette("dark", 10)


def method_colour(method: str) -> tuple[float, float, float]:
    """The colour of ``method`` in every figure (a stable colour for unknown methods too)."""
    colours, extra = _palettes()
    if method in colours:
        return colours[method]
    return extra[zlib.crc32(method.encode()) % len(extra)]
