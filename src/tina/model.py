"""The Tina diffusion transformer: it predicts a classifier's flat parameter vector.

The generated net's parameters are one flat vector of length ``P`` made of named tensors in a
fixed order (a :class:`ParamLayout`). The transformer sees three kinds of tokens:

- body tokens: every non-head tensor is cut into chunks of ``chunk_size`` values *within* the
  tensor (the last chunk of a tensor is zero-padded); each chunk position has its own linear
  encoder and decoder (G.pt style), applied as one batched einsum over stacked weights;
- class-slot tokens: slot ``j`` is a shared linear map of head row ``j`` (``head.weight[j]`` and
  ``head.bias[j]``) plus a shared linear map of prompt embedding ``j``, so each prompt is tied to
  the head row it decides. Without slot position embeddings the model is permutation-equivariant
  in the slots: permuting the prompts permutes the predicted head rows;
- a timestep token; the timestep embedding is also added to every token.

Each token sees its own slice of the noisy parameters ``x_t`` and, optionally, of a ``base``
vector (the generic parameters that the caller diffuses a residual from). The output is the
predicted clean parameters ``x0`` (whatever the caller diffuses: raw or residual), decoded per
token; decoders start at zero, so the first prediction is exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a net's tensors, in the order of its flat parameter vector.

    The head tensors (``head_weight`` ``[k, ...]`` and ``head_bias`` ``[k]``) hold one row per
    class slot; every other tensor is the body (possibly none, for head-only nets).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    head_weight: str = "head.weight"
    head_bias: str = "head.bias"

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "shapes", tuple(tuple(int(d) for d in s) for s in self.shapes))
        if len(self.names) != len(self.shapes):
            raise ValueError(f"ParamLayout: {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"ParamLayout: duplicate tensor names in {self.names}")
        for name in (self.head_weight, self.head_bias):
            if name not in self.names:
                raise ValueError(
                    f"ParamLayout: no head tensor {name!r} among {self.names}; "
                    "pass head_weight=/head_bias= naming the classifier head"
                )
        weight, bias = self.shape_of(self.head_weight), self.shape_of(self.head_bias)
        if len(weight) < 2 or bias != (weight[0],):
            raise ValueError(
                f"ParamLayout: head weight {weight} and bias {bias} must be [k, ...] and [k]"
            )

    @classmethod
    def from_named_shapes(cls, named: Iterable[tuple[str, Sequence[int]]], **heads) -> ParamLayout:
        """Build a layout from ``(name, shape)`` pairs in flat-vector order."""
        pairs = list(named)
        return cls(tuple(n for n, _ in pairs), tuple(tuple(s) for _, s in pairs), **heads)

    @classmethod
    def from_module(cls, module: nn.Module, **heads) -> ParamLayout:
        """The layout of ``module.named_parameters()`` (the order ``parameters_to_vector`` uses)."""
        return cls.from_named_shapes(((n, p.shape) for n, p in module.named_parameters()), **heads)

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``."""
        return self.shapes[self.names.index(name)]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of values in each tensor."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each tensor in the flat vector."""
        starts, total = [], 0
        for size in self.sizes:
            starts.append(total)
            total += size
        return tuple(starts)

    @property
    def P(self) -> int:  # noqa: N802 - the paper's name for the parameter count
        """Length of the flat parameter vector."""
        return sum(self.sizes)

    @property
    def k(self) -> int:
        """Number of class slots (rows of the head)."""
        return self.shape_of(self.head_weight)[0]

    @property
    def row_len(self) -> int:
        """Values per class slot: one head weight row plus its bias."""
        return math.prod(self.shape_of(self.head_weight)[1:]) + 1

    def span(self, name: str) -> range:
        """Flat indices of tensor ``name``."""
        i = self.names.index(name)
        return range(self.offsets[i], self.offsets[i] + self.sizes[i])

    def class_row_index(self) -> Tensor:
        """``[k, row_len]`` flat indices: slot ``j``'s weight row followed by its bias."""
        weight = torch.tensor(self.span(self.head_weight)).view(self.k, -1)
        bias = torch.tensor(self.span(self.head_bias)).view(self.k, 1)
        return torch.cat([weight, bias], dim=1)

    def body_names(self) -> tuple[str, ...]:
        """Names of the non-head tensors, in order."""
        return tuple(n for n in self.names if n not in (self.head_weight, self.head_bias))

    def body_index(self) -> Tensor:
        """``[P_body]`` flat indices of every value outside the head (may be empty)."""
        spans = [torch.tensor(self.span(n)) for n in self.body_names()]
        return torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)

    def body_chunk_index(self, chunk_size: int) -> Tensor:
        """``[n_chunks, chunk_size]`` flat indices of body chunks cut within each tensor.

        The last chunk of each tensor is padded with the index ``P`` (a zero slot).
        """
        chunks = []
        for name in self.body_names():
            span = torch.tensor(self.span(name))
            pad = (-len(span)) % chunk_size
            chunks.append(F.pad(span, (0, pad), value=self.P).view(-1, chunk_size))
        return torch.cat(chunks) if chunks else torch.zeros(0, chunk_size, dtype=torch.long)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of integer timesteps ``t`` ``[B]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class PerTokenLinear(nn.Module):
    """``n`` independent linear maps, one per token position, applied as one einsum."""

    def __init__(self, n: int, d_in: int, d_out: int, *, zero: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n, d_out))
        if not zero:
            bound = 1.0 / math.sqrt(d_in)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, n, d_in]`` to ``[B, n, d_out]``."""
        return torch.einsum("bni,nio->bno", x, self.weight) + self.bias


class Block(nn.Module):
    """A pre-LN transformer block with key-padding masked self-attention."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """``x`` ``[B, L, W]``; ``key_mask`` ``[B, L]`` True where a token may be attended to."""
        b, n, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, n, w)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinaTransformer(nn.Module):
    """Predicts clean parameters ``x0`` from noisy ones, conditioned on class-prompt embeddings.

    Args:
        layout: the generated net's parameter layout.
        prompt_dim: size ``D`` of one class-prompt embedding.
        width, depth, heads, dropout: transformer size.
        chunk_size: values per body token.
        slot_positions: add a learned embedding per class slot (breaks slot equivariance).
        use_base: feed each token its slice of a ``base`` parameter vector too.
    """

    def __init__(
        self,
        layout: ParamLayout,
        prompt_dim: int,
        *,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        chunk_size: int = 64,
        dropout: float = 0.0,
        slot_positions: bool = False,
        use_base: bool = True,
    ):
        super().__init__()
        self.layout, self.prompt_dim, self.width = layout, prompt_dim, width
        self.use_base = use_base
        self.register_buffer("body_idx", layout.body_chunk_index(chunk_size), persistent=False)
        self.register_buffer("class_idx", layout.class_row_index(), persistent=False)
        self.register_buffer("inverse_idx", self._inverse_index(), persistent=False)
        n_in = 2 if use_base else 1
        n_body = self.body_idx.shape[0]
        self.body_in = PerTokenLinear(n_body, n_in * chunk_size, width)
        self.body_out = PerTokenLinear(n_body, width, chunk_size, zero=True)
        self.class_in = nn.Linear(n_in * layout.row_len, width)
        self.prompt_in = nn.Linear(prompt_dim, width)
        self.class_out = nn.Linear(width, layout.row_len)
        nn.init.zeros_(self.class_out.weight)
        nn.init.zeros_(self.class_out.bias)
        self.null_prompt = nn.Parameter(torch.randn(prompt_dim) / math.sqrt(prompt_dim))
        self.slot_pos = (
            nn.Parameter(torch.randn(layout.k, width) * 0.02) if slot_positions else None
        )
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(depth))
        self.ln_out = nn.LayerNorm(width)

    def _inverse_index(self) -> Tensor:
        """``[P]`` position of each flat parameter in the concatenated per-token outputs."""
        body = self.body_idx.flatten()
        sources = torch.cat([body, self.class_idx.flatten()])
        positions = torch.arange(len(sources))
        keep = sources < self.layout.P
        inverse = torch.full((self.layout.P,), -1, dtype=torch.long)
        inverse[sources[keep]] = positions[keep]
        assert (inverse >= 0).all(), "layout does not cover every parameter"
        return inverse

    def _check(self, x_t: Tensor, t: Tensor, prompts: Tensor, prompt_mask: Tensor, base, drop):
        """Raise a ValueError naming the first input whose shape or dtype is wrong."""
        b, (p, k, d) = x_t.shape[0], (self.layout.P, self.layout.k, self.prompt_dim)
        given = {"x_t": x_t, "t": t, "prompts": prompts, "prompt_mask": prompt_mask}
        expected = {"x_t": (b, p), "t": (b,), "prompts": (b, k, d), "prompt_mask": (b, k)}
        given |= {"base": base, "drop_prompt": drop}
        expected |= {"base": (b, p), "drop_prompt": (b,)}
        for name, value in given.items():
            if value is not None and tuple(value.shape) != expected[name]:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)}, expected {expected[name]}"
                )
        for name in ("prompt_mask", "drop_prompt"):
            if given[name] is not None and given[name].dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor, got {given[name].dtype}")

    def _inputs(self, x_t: Tensor, base: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-token input slices: body ``[B, n_body, n_in*C]`` and class ``[B, k, n_in*R]``."""
        sources = [x_t]
        if self.use_base:
            sources.append(torch.zeros_like(x_t) if base is None else base)
        elif base is not None:
            raise ValueError("base given to a TinaTransformer built with use_base=False")
        padded = [F.pad(s, (0, 1)) for s in sources]
        body = torch.cat([s[:, self.body_idx] for s in padded], dim=-1)
        rows = torch.cat([s[:, self.class_idx] for s in sources], dim=-1)
        return body, rows

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        prompts: Tensor,
        prompt_mask: Tensor,
        base: Tensor | None = None,
        drop_prompt: Tensor | None = None,
    ) -> Tensor:
        """Predict ``x0`` ``[B, P]``.

        Args:
            x_t: noisy parameters ``[B, P]``; t: timesteps ``[B]`` (long).
            prompts: class-prompt embeddings ``[B, k, D]``, slot ``j`` for head row ``j``.
            prompt_mask: ``[B, k]`` bool, True for real classes; padded slots are not attended
                to and their head rows are predicted as 0.
            base: optional ``[B, P]`` conditioning parameters (zeros when omitted).
            drop_prompt: optional ``[B]`` bool; True replaces every prompt by the learned null
                prompt (classifier-free guidance).
        """
        self._check(x_t, t, prompts, prompt_mask, base, drop_prompt)
        if drop_prompt is not None:
            prompts = torch.where(drop_prompt[:, None, None], self.null_prompt, prompts)
        body_in, rows_in = self._inputs(x_t, base)
        time = self.time_mlp(timestep_embedding(t, self.width))[:, None]
        slots = self.class_in(rows_in) + self.prompt_in(prompts)
        if self.slot_pos is not None:
            slots = slots + self.slot_pos
        tokens = torch.cat([self.body_in(body_in), slots, time], dim=1) + time
        n_body, b = self.body_idx.shape[0], x_t.shape[0]
        body_mask, time_mask = prompt_mask.new_ones(b, n_body), prompt_mask.new_ones(b, 1)
        key_mask = torch.cat([body_mask, prompt_mask, time_mask], dim=1)
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        tokens = self.ln_out(tokens)
        body = self.body_out(tokens[:, :n_body]).flatten(1)
        slots = self.class_out(tokens[:, n_body:-1]) * prompt_mask[..., None]
        return torch.cat([body, slots.flatten(1)], dim=1)[:, self.inverse_idx]
