"""Tina's code space: what the diffusion runs over instead of a p-model's raw parameters.

A p-model's code is its residual over the generic model with classifier selection (the *base*),
normalised per parameter; head rows share their statistics across class slots, so the code stays
equivariant to the class order (:class:`ParamCodec`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tina.model import ParamLayout
from tina.nets import NetSpec, split_body


def layout_of(spec: NetSpec) -> ParamLayout:
    """The transformer's view of the flat parameters of ``spec``'s nets."""
    return ParamLayout.from_named_shapes(spec.param_shapes())


class ParamCodec:
    """Maps parameters to Tina's diffusion space and back: ``x0 = (p - base - mean) / std``."""

    def __init__(
        self,
        spec: NetSpec,
        mean: Tensor,
        std: Tensor,
        neutral_row: Tensor,
        generic: Tensor,
        residual: bool,
    ):
        self.spec = spec
        self.mean, self.std = mean, std
        self.neutral_row = neutral_row
        self.generic = generic
        self.residual = residual
        self.rows = spec.head_rows()
        self.spec_all = spec.with_classes(self._num_generic_rows(), head_only=False)

    def _num_generic_rows(self) -> int:
        body = self.spec.with_classes(1, head_only=False).body_size
        return (self.generic.numel() - body) // (self.spec.feature_dim + 1)

    # base parameters ---------------------------------------------------------------
    def body(self) -> Tensor:
        """The generic body (the frozen feature extractor of head-only nets)."""
        return split_body(self.generic, self.spec_all)[0]

    def generic_rows(self) -> Tensor:
        """``[C, row_len]``: every class's generic head row (weight row then bias)."""
        return self.generic[self.spec_all.head_rows()]

    def base(self, classes: Tensor, known: Tensor) -> Tensor:
        """Classifier-selected generic parameters ``[B, P]`` for ``classes [B, k]``.

        Slots whose class is padding or not ``known`` (``known [B, k]`` False) get the neutral
        row; with ``residual`` off the base is zero.
        """
        rows = self.generic_rows()[classes.clamp(min=0)]
        return self.base_from_rows(rows, known & (classes >= 0))

    def base_from_rows(self, rows: Tensor, use: Tensor) -> Tensor:
        """Base parameters ``[B, P]``: the generic body and the head rows ``rows [B, k, F + 1]``
        of the slots where ``use [B, k]``, the neutral row elsewhere (zero without
        ``residual``). Grounded prompts (:mod:`tina.grounding`) give their rows here."""
        b = rows.shape[0]
        out = torch.zeros(b, self.spec.num_params)
        if not self.residual:
            return out
        if not self.spec.head_only:
            body = split_body(self.generic, self.spec_all)[0]
            out[:, : body.numel()] = body
        rows = torch.where(use.unsqueeze(-1), rows, self.neutral_row.expand_as(rows))
        out[:, self.rows.reshape(-1)] = rows.reshape(b, -1)
        return out

    # code <-> params ---------------------------------------------------------------
    def encode(self, params: Tensor, base: Tensor) -> Tensor:
        return (params - base - self.mean) / self.std

    def decode(self, code: Tensor, base: Tensor) -> Tensor:
        return code * self.std + self.mean + base

    @classmethod
    def fit(
        cls,
        params: Tensor,
        classes: Tensor,
        generic: Tensor,
        spec: NetSpec,
        *,
        residual: bool,
        normalize: bool,
        rows: Tensor | None = None,
    ) -> ParamCodec:
        """Statistics of the training residuals; head rows pooled over slots.

        ``rows [N, k, F + 1]`` are the base rows the residuals are taken from (the grounded
        prompts Tina trains on, :mod:`tina.grounding`); by default every slot's own generic row.
        """
        p = spec.num_params
        probe = cls(
            spec,
            torch.zeros(p),
            torch.ones(p),
            torch.zeros(spec.feature_dim + 1),
            generic,
            residual,
        )
        known_rows = probe.generic_rows()[classes[classes >= 0].unique()]
        probe.neutral_row = known_rows.mean(0)
        if rows is None:
            base = probe.base(classes, torch.ones_like(classes, dtype=torch.bool))
        else:
            base = probe.base_from_rows(rows, classes >= 0)
        resid = params - base
        mean, std = torch.zeros(p), torch.ones(p)
        if normalize:
            mean, std = resid.mean(0), resid.std(0)
            rows = probe.rows
            head = resid[:, rows]  # [N, k, row_len]
            mean[rows] = head.mean((0, 1)).expand(rows.shape)
            std[rows] = head.std((0, 1)).expand(rows.shape)
            # a floor keeps dead units (near-constant parameters) from blowing up the code
            std = std.clamp(min=0.1 * float(std.median()))
        return cls(spec, mean, std, probe.neutral_row, generic, residual)

    def to(self, device: torch.device | str) -> ParamCodec:
        """The same code space with its tensors on ``device``."""
        return ParamCodec(
            self.spec,
            self.mean.to(device),
            self.std.to(device),
            self.neutral_row.to(device),
            self.generic.to(device),
            self.residual,
        )

    def state(self) -> dict[str, Tensor]:
        return {
            "codec.mean": self.mean,
            "codec.std": self.std,
            "codec.neutral_row": self.neutral_row,
            "codec.generic": self.generic,
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor], spec: NetSpec, residual: bool) -> ParamCodec:
        return cls(
            spec,
            state["codec.mean"],
            state["codec.std"],
            state["codec.neutral_row"],
            state["codec.generic"],
            residual,
        )
