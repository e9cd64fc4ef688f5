"""Every random stream of the package comes from here, so the same config gives the same numbers.

Two derivations are in use, each kept where it is because changing either would change results:

- :func:`derive_seed` / :func:`generator`: a 63-bit seed hashed (SHA-256) from any parts, e.g.
  the config seed, a stage name and a task id. Training, the zoo and the evaluation use it.
- :func:`stream_generator`: numpy's ``SeedSequence`` over integer stream ids; the data set
  preparation (per-class subsampling, rendering, augmentation draws) uses it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (e.g. the config seed and a task id), stable across runs."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(*parts) -> torch.Generator:
    """A CPU torch generator seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def stream_generator(seed: int, *stream: int) -> torch.Generator:
    """An independent CPU torch generator for the integer stream ``(seed, *stream)``."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
