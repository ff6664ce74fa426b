"""The fused C kernel (autosteer._C.apply_delta) against a plain-torch reference."""

import pytest
import torch

from autosteer import _C

SEED = 1234


def reference(h, dirs, weights, last):
    """h[b, t] + rms(h[b, last_b]) * sum_j w[b, j] dirs[j], in float64, rounded once."""
    h64 = h.double()
    B, T, D = h.shape
    last = torch.full((B,), T - 1) if last is None else last
    ref = h64[torch.arange(B), last]
    s = ref.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    w = weights.double()
    if w.dim() == 1:
        w = w.expand(B, -1)
    delta = s * (w @ dirs.double())
    return (h64 + delta[:, None, :]).to(h.dtype)


TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "transposed"])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("via", ["auto", "capsule"])
def test_kernel_matches_torch(dtype, layout, per_row, via):
    g = torch.Generator().manual_seed(SEED)
    B, T, D, J = 3, 6, 40, 3
    if layout == "contiguous":
        h = torch.randn(B, T, D, generator=g).to(dtype)
    elif layout == "strided":
        # every other position of a longer buffer, and a gap after each row
        h = torch.randn(B, 2 * T + 1, D + 8, generator=g).to(dtype)[:, ::2, :D][:, :T]
    else:
        # batch and sequence dimensions swapped in memory
        h = torch.randn(T, B, D, generator=g).to(dtype).transpose(0, 1)
    assert h.shape == (B, T, D) and h.stride(2) == 1
    dirs = torch.randn(J, D, generator=g)
    weights = torch.randn(B, J, generator=g) if per_row else torch.randn(J, generator=g)
    last = torch.tensor([T - 1, 2, 0])
    expected = reference(h.clone(), dirs, weights, last)
    before = h.clone()
    _C.apply_delta(h, dirs, weights, last, via=via)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(h.float(), expected.float(), rtol=rtol, atol=atol)
    assert not torch.equal(h, before)


def test_default_last_position_and_zero_weights():
    g = torch.Generator().manual_seed(SEED)
    h = torch.randn(2, 4, 16, generator=g)
    dirs = torch.randn(1, 16, generator=g)
    w = torch.tensor([0.7])
    expected = reference(h.clone(), dirs, w, None)
    _C.apply_delta(h, dirs, w)
    torch.testing.assert_close(h, expected, rtol=1e-5, atol=1e-5)
    frozen = h.clone()
    _C.apply_delta(h, dirs, torch.zeros(1))
    assert torch.equal(h, frozen)  # a zero weight leaves every bit in place


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(2, 3, 4, dtype=torch.float64), torch.zeros(1, 4), torch.ones(1)), "float32, float16 or bfloat16"),
        ((torch.zeros(2, 3, 4), torch.zeros(1, 5), torch.ones(1)), "directions"),
        ((torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.ones(3)), "weights"),
        ((torch.zeros(2, 3, 4)[:, :, ::2], torch.zeros(1, 2), torch.ones(1)), "contiguous hidden"),
        ((torch.zeros(2, 3), torch.zeros(1, 3), torch.ones(1)), "3-D"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _C.apply_delta(*args)


def test_last_index_out_of_range():
    with pytest.raises(IndexError):
        _C.apply_delta(torch.zeros(2, 3, 4), torch.zeros(1, 4), torch.ones(1), torch.tensor([0, 3]))


def test_exchange_table_is_used_when_torch_has_it():
    has = hasattr(torch.Tensor, "__dlpack_c_exchange_api__")
    assert _C.has_exchange_api(torch.zeros(1)) == has
