"""The contract of every public op, driven by tests/contract.py's table: parity with the float64
reference (outputs and gradients), gradcheck, opcheck, torch.compile(fullgraph=True), determinism,
NaN propagation and bad input, on every backend that can run the op here (the Triton interpreter
gets the small shapes). What is particular to one family (independent formulas, memory profiles,
thread counts, kernel paths, samplers, modules) stays in that family's test file."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sslfast

from contract import F32, F64, ROWS
from helpers import (DEVICE_TYPE, assert_within_eager_error, fast_backends, interpreted, namespaces, outputs,
                     outputs_and_grads, runnable_backends, to_float64)


def _id(*parts):
    return "-".join(p for p in parts if p)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


PARITY = [pytest.param(row, mode, backend, dtype, id=_id(row.name, mode, backend, _dtype_name(dtype)))
          for row in ROWS for mode in row.modes for backend in runnable_backends(DEVICE_TYPE, row.op)
          for dtype in row.dtypes_for(mode, backend)]
GRADCHECK = [pytest.param(row, mode, backend, id=_id(row.name, mode, backend))
             for row in ROWS for mode in row.gradcheck for backend in fast_backends(row.op)]
OPCHECK = [pytest.param(row, namespace, id=_id(row.name, namespace))
           for row in ROWS if row.opcheck for namespace in namespaces(row.op)]
COMPILE = [pytest.param(row, mode, backend, id=_id(row.name, mode, backend))
           for row in ROWS for mode in row.compiled_modes() for backend in fast_backends(row.op)]
# The Triton interpreter runs a launch's programs one after another: it cannot show a race, so it
# checks one mode per row (every mode of a seeded row).
DETERMINISM = [pytest.param(row, mode, backend, id=_id(row.name, mode, backend))
               for row in ROWS for backend in fast_backends(row.op)
               for mode in (tuple(row.modes)[:1] if interpreted(backend) and not row.random else row.modes)]
NAN = [pytest.param(row, backend, id=_id(row.name, backend)) for row in ROWS if row.nan
       for backend in fast_backends(row.op)]


def _grads(row, mode, inputs):
    """The gradient inputs of this mode that exist (an optional input may be None)."""
    return [name for name in row.grads_for(mode) if inputs.get(name) is not None]


@pytest.mark.parametrize("row, mode, backend, dtype", PARITY)
def test_parity_with_float64_reference(row, mode, backend, dtype):
    """The public op vs the reference in the same dtype (eager) and in float64 (truth): within
    twice eager's error plus the dtype's floor, outputs and gradients; dtypes and shapes as eager's;
    integer outputs and the row's ``exact`` outputs bit for bit."""
    ran = 0
    for shape in row.shapes_for(backend):
        inputs = row.make(shape, dtype, row.modes[mode])
        if inputs is None:
            continue
        ran += 1
        grads = _grads(row, mode, inputs)
        got, got_grads, upstream = outputs_and_grads(row.call, inputs, grads, backend, copy=row.inplace)
        eager, eager_grads, _ = outputs_and_grads(row.reference, inputs, grads, "reference", upstream, row.inplace)
        truth, truth_grads, _ = outputs_and_grads(row.reference, to_float64(inputs), grads, "reference", upstream,
                                                row.inplace)
        what = f"{row.name} [{mode}] {shape} {dtype} on {backend}"
        assert len(got) == len(eager), what
        for k, (g, e) in enumerate(zip(got, eager)):
            assert (g.dtype, g.shape) == (e.dtype, e.shape), f"{what}: output {k}"
            if not g.is_floating_point():
                assert torch.equal(g, e), f"{what}: output {k}"
        for k in row.exact(dtype) if row.exact else ():
            assert torch.equal(got[k], eager[k]), f"{what}: output {k} differs from eager's"
        floating = [k for k, g in enumerate(got) if g.is_floating_point()]
        assert_within_eager_error([got[k] for k in floating] + got_grads, [eager[k] for k in floating] + eager_grads,
                                  [truth[k] for k in floating] + truth_grads, row.floors[dtype], what)
    if not ran:
        pytest.skip("no shape of this mode")


@pytest.mark.parametrize("row, mode, backend", GRADCHECK)
def test_gradcheck(row, mode, backend):
    """float64 gradcheck (fast mode under the Triton interpreter where the row asks: each probe is
    a launch)."""
    inputs = to_float64(row.make(row.tiny, F64, row.modes[mode]))
    grads = _grads(row, mode, inputs)
    leaves = tuple(inputs[name].detach().clone().requires_grad_() for name in grads)

    def fn(*xs):
        return tuple(o for o in outputs(row.call({**inputs, **dict(zip(grads, xs))})) if o.is_floating_point())

    with sslfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7,
                                        fast_mode=row.gradcheck_fast_triton and interpreted(backend))


@pytest.mark.parametrize("row, namespace", OPCHECK)
def test_opcheck(row, namespace):
    ops = getattr(torch.ops, namespace)
    for op, args, *test_utils in row.opcheck(ops, namespace == "sslfast"):
        torch.library.opcheck(op, args, **({"test_utils": test_utils[0]} if test_utils else {}))


@pytest.mark.parametrize("row, mode, backend", COMPILE)
def test_compile_fullgraph(row, mode, backend):
    """torch.compile(fullgraph=True) of the public call: eager's outputs and gradients."""
    torch._dynamo.reset()
    inputs = row.make(row.tiny, F32, row.modes[mode])
    grads = _grads(row, mode, inputs)
    want, want_grads, upstream = outputs_and_grads(row.call, inputs, grads, backend, copy=row.inplace)
    got, got_grads, _ = outputs_and_grads(torch.compile(row.call, fullgraph=True), inputs, grads, backend, upstream,
                                       row.inplace)
    torch._dynamo.reset()
    assert len(got) == len(want)
    for g, w in zip(got + got_grads, want + want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("row, mode, backend", DETERMINISM)
def test_deterministic(row, mode, backend):
    """Two calls give the same bits (outputs and gradients) at the row's largest shape (``big``:
    several blocks and threads); a seeded (random) row gives other results for another seed."""
    dtype = F32 if F32 in row.dtypes else row.dtypes[0]
    inputs = next(filter(None, (row.make(s, dtype, row.modes[mode]) for s in row.determinism_shapes(backend))))
    grads = _grads(row, mode, inputs)
    first, first_grads, upstream = outputs_and_grads(row.call, inputs, grads, backend, copy=row.inplace)
    second, second_grads, _ = outputs_and_grads(row.call, inputs, grads, backend, upstream, row.inplace)
    for a, b in zip(first + first_grads, second + second_grads):
        assert torch.equal(a, b)
    if row.random:
        other, _, _ = outputs_and_grads(row.call, {**inputs, "seed": inputs["seed"] + 1}, grads, backend, upstream,
                                     row.inplace)
        assert any(not torch.equal(a, b) for a, b in zip(first, other)), "another seed, the same result"


@pytest.mark.parametrize("row, backend", NAN)
def test_nan_in_nan_out(row, backend):
    run, check = row.nan()
    with sslfast.use_backend(backend):
        check(run())


class _KernelSpy(TorchDispatchMode):
    """Records every sslfast kernel op dispatched (not the Graph builder's csr_by_key)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in ("sslfast", "sslfast_triton") and "csr_by_key" not in func.name():
            self.seen.append(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("row", [r for r in ROWS if r.bad], ids=lambda r: r.name)
def test_bad_input_names_the_argument(row):
    """Each bad input raises its error, whose message names the argument: a Python check on every
    backend, before any kernel is dispatched; a value check on the backends that make it."""
    runnable = runnable_backends(DEVICE_TYPE, row.op)
    for case in row.bad():
        for backend in runnable if case.backends is None else [b for b in case.backends if b in runnable]:
            spy = _KernelSpy()
            with sslfast.use_backend(backend), pytest.raises(case.error, match=case.match):
                with spy:
                    case.call()
            if case.backends is None:
                assert not spy.seen, f"{case.match!r} on {backend}: raised after the kernels {spy.seen}"
