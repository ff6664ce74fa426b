"""The fused C kernel (autosteer._C.apply_delta) against a plain-torch reference,
and the shape of the extension module itself (exports, exceptions, constants)."""

import pathlib
import pickle
import shutil
import subprocess
import sys

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


# ---------------------------------------------------------------- per-row weights
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_pick_a_weights_row_per_batch_row(dtype):
    """apply_delta(..., rows=r) with weights [G, J] equals weights[r] as [B, J]."""
    g = torch.Generator().manual_seed(SEED)
    B, T, D, J, G = 5, 4, 24, 3, 3
    h = torch.randn(B, T, D, generator=g).to(dtype)
    dirs = torch.randn(J, D, generator=g)
    weights = torch.randn(G, J, generator=g)
    rows = torch.tensor([2, 0, 0, 1, 2])
    expected = h.clone()
    _C.apply_delta(expected, dirs, weights[rows].contiguous())
    _C.apply_delta(h, dirs, weights, rows=rows)
    assert torch.equal(h, expected)
    with pytest.raises(IndexError, match=r"rows\[1\] is 3"):
        _C.apply_delta(h, dirs, weights, rows=torch.tensor([0, 3, 0, 0, 0]))
    with pytest.raises(ValueError, match="rows must be"):
        _C.apply_delta(h, dirs, weights, rows=torch.tensor([0, 1]))


def test_hidden_that_requires_grad_is_refused():
    """The exchange table exports tensors that require grad; writing them in place would break autograd."""
    h = torch.zeros(1, 2, 4, requires_grad=True)
    with pytest.raises(ValueError, match="require grad"):
        _C.apply_delta(h, torch.ones(1, 4), torch.ones(1))
    assert torch.equal(h.detach(), torch.zeros(1, 2, 4))


# ---------------------------------------------------------------- the module itself
def test_only_pyinit_is_exported():
    """Several translation units, hidden visibility: the .so exports PyInit__C and nothing else of ours."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", _C.__file__], capture_output=True, text=True, check=True)
    names = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    # what the toolchain adds on its own (ELF bookkeeping), not our code
    ours = {n for n in names if not n.startswith(("_init", "_fini", "__bss", "_edata", "_end", "__data"))}
    assert ours == {"PyInit__C"}, sorted(ours)


def test_the_c_core_imports_nothing_from_the_package():
    """Loading the extension with autosteer.errors unimportable works: C creates its own exceptions."""
    code = (
        "import importlib.machinery, importlib.util, sys\n"
        "sys.modules['autosteer'] = None\n"
        "sys.modules['autosteer.errors'] = None\n"
        f"loader = importlib.machinery.ExtensionFileLoader('autosteer._C', {_C.__file__!r})\n"
        "spec = importlib.util.spec_from_loader('autosteer._C', loader)\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "loader.exec_module(m)\n"
        "assert m.ScheduleError.__module__ == 'autosteer.errors'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_exceptions_are_made_in_c_and_reexported():
    import autosteer
    from autosteer import errors

    for name, builtin in [("AutoSteerError", Exception), ("InvalidArgumentError", ValueError),
                          ("ScheduleError", ValueError), ("SteerStateError", TypeError)]:
        cls = getattr(_C, name)
        assert getattr(errors, name) is cls and getattr(autosteer, name) is cls
        assert cls.__module__ == "autosteer.errors" and issubclass(cls, builtin)
        assert issubclass(cls, _C.AutoSteerError)
        err = pickle.loads(pickle.dumps(cls("what was expected, what arrived")))
        assert type(err) is cls and str(err) == "what was expected, what arrived"
    for name, builtin in [("LayerIndexError", IndexError), ("UnsupportedModelError", TypeError),
                          ("VectorShapeError", ValueError), ("SearchSpaceError", ValueError),
                          ("LogFormatError", ValueError)]:
        cls = getattr(errors, name)
        assert issubclass(cls, _C.AutoSteerError) and issubclass(cls, builtin)
        assert type(pickle.loads(pickle.dumps(cls("x")))) is cls


def test_one_rms_epsilon_everywhere():
    """_C.RMS_EPS (kernel.h) is the package's only rms epsilon; the reference keeps its own."""
    assert _C.RMS_EPS == 1e-6
    package = pathlib.Path(_C.__file__).parent / "steering"
    for name in ("steer.py", "_torch_hook.py", "layers.py", "schedules.py"):  # the files that steer
        path = package / name
        text = path.read_text()
        assert "1e-6" not in text and "1e-06" not in text, f"{path.name} has its own rms epsilon"
