"""Tests of the parameter layout and the Tina transformer."""

import pytest
import torch
from torch import nn

from tina.diffusion import Schedule, ddim_sample, guided, x0_loss
from tina.model import ParamLayout, TinaTransformer

K, D = 4, 6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the machine's cores are shared, and small ops are faster this way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cnn_layout(k: int = 10) -> ParamLayout:
    """The paper's 5K CNN."""
    return ParamLayout.from_named_shapes(
        [
            ("conv1.weight", (16, 3, 3, 3)),
            ("conv1.bias", (16,)),
            ("conv2.weight", (32, 16, 3, 3)),
            ("conv2.bias", (32,)),
            ("head.weight", (k, 32)),
            ("head.bias", (k,)),
        ]
    )


def small_layout(k: int = K) -> ParamLayout:
    return ParamLayout.from_named_shapes(
        [
            ("conv.weight", (5, 1, 3, 3)),
            ("conv.bias", (5,)),
            ("head.weight", (k, 5)),
            ("head.bias", (k,)),
        ]
    )


def build(layout: ParamLayout, seed: int = 0, **kwargs) -> TinaTransformer:
    """A small model with every parameter redrawn from ``seed`` (decoders included, so the
    output is not the trivial zero of the initialisation)."""
    options = dict(width=32, depth=2, heads=4, chunk_size=8) | kwargs
    model = TinaTransformer(layout, D, **options).eval()
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def inputs(layout: ParamLayout, b: int = 3, seed: int = 1):
    g = gen(seed)
    return (
        torch.randn(b, layout.P, generator=g),
        torch.randint(0, 1000, (b,), generator=g),
        torch.randn(b, layout.k, D, generator=g),
        torch.ones(b, layout.k, dtype=torch.bool),
        torch.randn(b, layout.P, generator=g),
    )


def permute_slots(x: torch.Tensor, layout: ParamLayout, perm: torch.Tensor) -> torch.Tensor:
    """Head row j of the result is head row perm[j] of ``x``."""
    rows = layout.class_row_index()
    out = x.clone()
    out[:, rows] = x[:, rows[perm]]
    return out


def test_layout_indices_partition_the_vector():
    layout = cnn_layout()
    assert (layout.P, layout.k, layout.row_len) == (5418, 10, 33)
    assert layout.offsets == (0, 432, 448, 5056, 5088, 5408)
    rows = layout.class_row_index()
    assert rows.shape == (10, 33)
    assert rows[3, :32].tolist() == list(range(5088 + 96, 5088 + 128)) and rows[3, 32] == 5411
    body = layout.body_index()
    assert body.tolist() == list(range(5088))
    assert torch.equal(torch.cat([body, rows.flatten()]).sort().values, torch.arange(5418))
    chunks = layout.body_chunk_index(64)
    assert chunks.shape == (7 + 1 + 72 + 1, 64)  # chunks never cross a tensor boundary
    assert chunks[6, 48:].eq(5418).all() and chunks[7, :16].tolist() == list(range(432, 448))


def test_layout_from_module_and_errors():
    net = nn.Sequential()
    net.add_module("body", nn.Linear(3, 4))
    net.add_module("head", nn.Linear(4, 2))
    layout = ParamLayout.from_module(net)
    assert layout.names == ("body.weight", "body.bias", "head.weight", "head.bias")
    assert (layout.P, layout.k) == (4 * 3 + 4 + 2 * 4 + 2, 2)
    with pytest.raises(ValueError, match="no head tensor 'head.weight'"):
        ParamLayout(("fc.weight", "fc.bias"), ((2, 3), (2,)))
    with pytest.raises(ValueError, match=r"must be \[k, ...\] and \[k\]"):
        ParamLayout(("head.weight", "head.bias"), ((2, 3), (3,)))


def test_output_shape_and_zero_at_init():
    layout = cnn_layout()
    model = TinaTransformer(layout, D, width=64, depth=2)
    x_t, t, prompts, mask, base = inputs(layout, b=2)
    out = model(x_t, t, prompts, mask, base)
    assert out.shape == (2, layout.P)
    assert out.abs().max().item() == 0.0
    assert build(layout)(x_t, t, prompts, mask, base).abs().mean().item() > 0.1


def test_bad_input_shapes_raise():
    layout = small_layout()
    model = build(layout)
    x_t, t, prompts, mask, base = inputs(layout)
    with pytest.raises(ValueError, match=r"prompts has shape \(3, 4, 5\), expected \(3, 4, 6\)"):
        model(x_t, t, prompts[..., :5], mask, base)
    with pytest.raises(ValueError, match="x_t has shape"):
        model(x_t[:, 1:], t, prompts, mask, base)
    with pytest.raises(ValueError, match=r"base has shape \(3, 60\), expected \(3, 74\)"):
        model(x_t, t, prompts, mask, base[:, :60])
    with pytest.raises(ValueError, match="prompt_mask must be a bool tensor, got torch.float32"):
        model(x_t, t, prompts, mask.float(), base)
    with pytest.raises(ValueError, match="use_base=False"):
        build(layout, use_base=False)(x_t, t, prompts, mask, base)


def test_slot_permutation_equivariance():
    layout = small_layout()
    x_t, t, prompts, mask, base = inputs(layout)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = (
        permute_slots(x_t, layout, perm),
        t,
        prompts[:, perm],
        mask,
        permute_slots(base, layout, perm),
    )
    model = build(layout)
    out = model(x_t, t, prompts, mask, base)
    out_perm = model(*permuted)
    assert torch.allclose(out_perm, permute_slots(out, layout, perm), atol=1e-5)
    assert (out_perm - out).abs().max() > 0.1  # the permutation does move the head rows
    positional = build(layout, slot_positions=True)
    expected = permute_slots(positional(x_t, t, prompts, mask, base), layout, perm)
    assert (positional(*permuted) - expected).abs().max() > 1e-2


def test_padded_slots_do_not_influence_real_slots():
    layout = small_layout()
    model = build(layout)
    x_t, t, prompts, mask, base = inputs(layout)
    mask[:, 2:] = False
    out = model(x_t, t, prompts, mask, base)
    other = prompts.clone()
    other[:, 2:] = torch.randn(3, 2, D, generator=gen(9)) * 10
    x_other = x_t.clone()
    x_other[:, layout.class_row_index()[2:]] += 5.0
    out_other = model(x_other, t, other, mask, base)
    assert torch.allclose(out, out_other, atol=1e-6)
    assert out[:, layout.class_row_index()[2:]].abs().max().item() == 0.0
    assert (model(x_t, t, other, torch.ones_like(mask), base) - out).abs().max() > 0.1


def test_drop_prompt_removes_prompt_dependence():
    layout = small_layout()
    model = build(layout)
    x_t, t, prompts, mask, base = inputs(layout)
    drop = torch.tensor([True, True, False])
    other = torch.randn(prompts.shape, generator=gen(4))
    gap = model(x_t, t, prompts, mask, base, drop) - model(x_t, t, other, mask, base, drop)
    assert gap[:2].abs().max().item() == 0.0
    assert gap[2].abs().max().item() > 0.1
    unconditional = guided(model, 0.0, prompts, mask, base)(x_t, t)
    # guidance runs a batch twice as large, which a kernel may sum in another order
    dropped = model(x_t, t, other, mask, base, torch.ones(3).bool())
    assert torch.allclose(unconditional, dropped, rtol=1e-5, atol=1e-6)


def test_base_and_timestep_change_the_output():
    layout = small_layout()
    model = build(layout)
    x_t, t, prompts, mask, base = inputs(layout)
    out = model(x_t, t, prompts, mask, base)
    assert (model(x_t, t, prompts, mask, None) - out).abs().max() > 0.1
    assert (model(x_t, t + 1, prompts, mask, base) - out).abs().max() > 1e-3


def test_head_only_layout():
    layout = ParamLayout.from_named_shapes([("head.weight", (3, 7)), ("head.bias", (3,))])
    assert layout.body_index().numel() == 0
    model = build(layout)
    x_t, t, prompts, mask, base = inputs(layout)
    out = model(x_t, t, prompts, mask, base)
    assert out.shape == (3, 24)
    perm = torch.tensor([1, 2, 0])
    out_perm = model(
        permute_slots(x_t, layout, perm),
        t,
        prompts[:, perm],
        mask,
        permute_slots(base, layout, perm),
    )
    assert torch.allclose(out_perm, permute_slots(out, layout, perm), atol=1e-5)


def test_learns_a_linear_text_to_weights_map():
    """64 tasks with x0 = f(prompts) linear and slot-equivariant; 200 steps of x0 loss."""
    k, g = 3, gen(0)
    layout = ParamLayout.from_named_shapes(
        [
            ("conv.weight", (4, 1, 3, 3)),
            ("conv.bias", (4,)),
            ("head.weight", (k, 4)),
            ("head.bias", (k,)),
        ]
    )
    prompts = torch.randn(64, k, D, generator=g)
    to_rows = torch.randn(D, layout.row_len, generator=g) / D**0.5
    to_body = torch.randn(D, layout.body_index().numel(), generator=g) / (D * k) ** 0.5
    x0 = torch.zeros(64, layout.P)
    x0[:, layout.class_row_index()] = prompts @ to_rows
    x0[:, layout.body_index()] = prompts.sum(1) @ to_body
    mask = torch.ones(64, k, dtype=torch.bool)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinaTransformer(layout, D, width=64, depth=2, chunk_size=16, use_base=False)
    schedule = Schedule("linear", 100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        batch = torch.randint(0, 64, (32,), generator=g)
        loss = x0_loss(
            lambda x_t, t, b=batch: model(x_t, t, prompts[b], mask[b]), x0[batch], schedule, g
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    model.eval()
    sample = ddim_sample(guided(model, 1.0, prompts, mask), x0.shape, schedule, 20, gen(1))
    r = torch.corrcoef(torch.stack([sample.flatten(), x0.flatten()]))[0, 1].item()
    assert r > 0.8, r
