"""The op table: which backend runs each public op on each device type.

Backends: ``native`` (the C++ kernels of ``sslfast._C``: CPU, and CUDA where built),
``triton`` (``sslfast/triton``: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``) and
``reference`` (the eager definitions in ``sslfast.reference``). Each public op has one schema,
defined in both the ``sslfast::`` (native) and ``sslfast_triton::`` (Triton) namespaces
(csrc/schema.cpp); its backend decides which namespace a call goes to.

How ``auto`` picks, per op and device type:
  1. the op's entry in ``OP_TABLE`` (set from measurements, benchmarks/NOTES.md), if that backend
     has a kernel registered for the device and can run there;
  2. else the first of native, triton that can;
  3. else the reference.
Overrides, strongest first: a forced backend (``use_backend(name)``, ``set_backend(name)`` or
``SSLFAST_BACKEND``), which raises when it cannot run an op rather than falling back; then a
per-op choice (``set_op_backend(op, backend, device_type)`` or ``SSLFAST_OP_BACKEND="op=backend,
op:cuda=backend"``), which raises the same way.

Adding a kernel: register it (``TORCH_LIBRARY_IMPL(sslfast, CUDA, m)`` in C++, or the Triton
launcher in ``sslfast/triton/<family>.py``); it becomes selectable at once, and its ``OP_TABLE``
entry makes ``auto`` prefer it (docs/ARCHITECTURE.md, "Adding an op").

The resolved choice of every (op, device type) is computed when the state changes, not per
call: a call costs one dict lookup. The state is a module global that ``torch.compile`` guards on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import NamedTuple

import torch

from . import _native

BACKENDS = ("auto", "native", "triton", "reference")
DEVICE_TYPES = ("cpu", "cuda")


class Op(NamedTuple):
    """One public op: the kernel op whose registration says a backend can run it on a device,
    and the backend ``auto`` picks per device type."""

    kernel: str
    auto: dict


# Why these choices: on CPU the C++ kernels beat eager and torch.compile for every op (the full
# CPU runs in benchmarks/results/). On CUDA the contrastive, masking, diffusion and augmentation
# ops have Triton kernels only (ema_ there is torch's multi-tensor apply); the GNN family has CUDA
# C++ kernels only (warp-per-row CSR, degree-aware), which beat cuSPARSE on random graphs
# (benchmarks/NOTES.md, H100 2026-11-23).
_CPP_CPU_TRITON_CUDA = {"cpu": "native", "cuda": "triton"}
_CPP_EVERYWHERE = {"cpu": "native", "cuda": "native"}

OP_TABLE = {
    "nt_xent": Op("nt_xent_fwd", _CPP_CPU_TRITON_CUDA),
    "info_nce": Op("info_nce_fwd", _CPP_CPU_TRITON_CUDA),
    "clip_loss": Op("clip_loss_fwd", _CPP_CPU_TRITON_CUDA),
    "siglip_loss": Op("siglip_loss_fwd", _CPP_CPU_TRITON_CUDA),
    "supcon": Op("supcon_fwd", _CPP_CPU_TRITON_CUDA),
    "random_masking": Op("random_masking_fwd", _CPP_CPU_TRITON_CUDA),
    "unshuffle": Op("unshuffle_fwd", _CPP_CPU_TRITON_CUDA),
    "masked_patch_loss": Op("masked_patch_loss_fwd", _CPP_CPU_TRITON_CUDA),
    "q_sample": Op("q_sample_fwd", _CPP_CPU_TRITON_CUDA),
    "diffusion_loss": Op("diffusion_loss_fwd", _CPP_CPU_TRITON_CUDA),
    "diffusion_step": Op("diffusion_step", _CPP_CPU_TRITON_CUDA),
    "diffusion_sigma_step": Op("diffusion_sigma_step", _CPP_CPU_TRITON_CUDA),
    "spmm": Op("spmm_fwd", _CPP_EVERYWHERE),
    "gcn_aggregate": Op("gcn_aggregate_fwd", _CPP_EVERYWHERE),
    "sddmm": Op("sddmm_fwd", _CPP_EVERYWHERE),
    "gat_aggregate": Op("gat_aggregate_fwd", _CPP_EVERYWHERE),
    "augment_images": Op("augment_images_fwd", _CPP_CPU_TRITON_CUDA),
    "drop_mask": Op("drop_mask_fwd", _CPP_CPU_TRITON_CUDA),
    "ema_": Op("ema_", _CPP_CPU_TRITON_CUDA),
}

_NAMESPACES = {"native": "sslfast", "triton": "sslfast_triton"}
_TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_can_run(device_type: str) -> bool:
    """Triton runs on CUDA tensors, and on CPU tensors only under ``TRITON_INTERPRET=1``."""
    return _TRITON_IMPORTABLE and (device_type == "cuda" or (device_type == "cpu" and triton_interpreted()))


def has_kernel(backend: str, op: str, device_type: str) -> bool:
    """Whether ``backend`` registered a kernel for ``op`` on ``device_type``."""
    if backend == "reference":
        return True
    if not _native.AVAILABLE:  # the extension defines both namespaces' schemas
        return False
    name = f"{_NAMESPACES[backend]}::{OP_TABLE[op].kernel}"
    # A device kernel, or one for every device (the Triton launchers register that way).
    keys = ("CUDA" if device_type == "cuda" else "CPU", "CompositeExplicitAutograd")
    try:
        return any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for key in keys)
    except RuntimeError:  # not defined
        return False


def why_not(backend: str, op: str, device_type: str):
    """None when ``backend`` can run ``op`` on ``device_type``, else the reason."""
    if backend == "reference":
        return None
    if backend == "native":
        if not _native.AVAILABLE:
            return f"the C++ extension sslfast._C is not built ({_native.IMPORT_ERROR})"
        if not has_kernel("native", op, device_type):
            have = [d for d in DEVICE_TYPES if has_kernel("native", op, d)]
            return f"native kernels of {op} exist for {have or 'no device'} only"
        return None
    if not _TRITON_IMPORTABLE:
        return "triton is not installed"
    if not triton_can_run(device_type):
        return "Triton needs a CUDA tensor, or TRITON_INTERPRET=1 for CPU tensors"
    if not has_kernel("triton", op, device_type):
        return f"{op} has no Triton kernel"
    return None


class _Unavailable(NamedTuple):
    message: str


class _Namespace:
    """The public ops of one backend's namespace as OpOverloads (no per-call overload lookup)."""

    def __init__(self, backend):
        self.backend = backend
        namespace = getattr(torch.ops, _NAMESPACES[backend])
        for op in OP_TABLE:
            setattr(self, op, getattr(namespace, op).default)

    def __repr__(self):
        return f"<sslfast {self.backend} ops>"


_state = {"backend": "auto", "per_op": {}}  # per_op: (op, device_type) -> backend
_resolved: dict = {}  # (op, device_type) -> _Namespace | None (reference) | _Unavailable
_namespaces: dict = {}


def _namespace(backend):
    if backend == "reference":
        return None
    if backend not in _namespaces:
        _namespaces[backend] = _Namespace(backend)
    return _namespaces[backend]


def _choose(op: str, device_type: str):
    forced = _state["backend"]
    if forced == "auto":
        forced = _state["per_op"].get((op, device_type), "auto")
    if forced != "auto":
        reason = why_not(forced, op, device_type)
        if reason:
            return _Unavailable(f"sslfast: backend {forced!r} cannot run {op} on {device_type}: {reason}")
        return _namespace(forced)
    preferred = OP_TABLE[op].auto.get(device_type)
    for backend in ([preferred] if preferred else []) + ["native", "triton"]:
        if why_not(backend, op, device_type) is None:
            return _namespace(backend)
    return None


_tables: dict = {}  # (backend, per-op choices, Triton interpreted) -> a resolved table


def _refresh():
    # Cached per setting: ``use_backend`` switches twice per ``with``, and resolving asks the
    # dispatcher about every op on every device (a benchmark's eager step paid that each call).
    key = (_state["backend"], tuple(sorted(_state["per_op"].items())), triton_interpreted())
    if key not in _tables:
        _tables[key] = {(op, d): _choose(op, d) for op in OP_TABLE for d in DEVICE_TYPES}
    _resolved.clear()
    _resolved.update(_tables[key])


def ops_for(op: str, like: torch.Tensor):
    """The namespace whose ``op`` runs for a call on ``like``'s device (``ns.<op>(...)``), or None
    for the reference. Raises when a forced backend cannot run it."""
    found = _resolved.get((op, "cuda" if like.is_cuda else "cpu"))
    if isinstance(found, _Unavailable):
        raise RuntimeError(found.message)
    return found


def backend_name(op: str, device_type: str) -> str:
    """The backend a call of ``op`` on ``device_type`` runs (for reports; raises like ``ops_for``)."""
    found = _resolved.get((op, device_type))
    if isinstance(found, _Unavailable):
        raise RuntimeError(found.message)
    return "reference" if found is None else found.backend


def table() -> dict:
    """{op: {device_type: backend or 'unavailable: ...'}} as currently resolved."""
    return {op: {d: (f.message if isinstance(f, _Unavailable) else ("reference" if f is None else f.backend))
                 for d in DEVICE_TYPES for f in [_resolved[(op, d)]]} for op in OP_TABLE}


# ------------------------------------------------------------------------------ user controls


def _check_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def get_backend() -> str:
    """The backend currently forced for every op (``auto`` unless forced)."""
    return _state["backend"]


def set_backend(name: str) -> None:
    """Force ``name`` for every op (``auto`` restores the op table)."""
    _state["backend"] = _check_backend(name)
    _refresh()


@contextlib.contextmanager
def use_backend(name: str):
    """Force a backend inside a ``with`` block; a forced backend that cannot run raises."""
    previous = _state["backend"]
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_op_backend(op: str, backend: str, device_type: str | None = None) -> None:
    """Choose the backend of one op (on one device type, or all); ``auto`` restores the table."""
    if op not in OP_TABLE:
        raise ValueError(f"op must be one of {sorted(OP_TABLE)}, got {op!r}")
    _check_backend(backend)
    if device_type is not None and device_type not in DEVICE_TYPES:
        raise ValueError(f"device_type must be one of {DEVICE_TYPES} or None, got {device_type!r}")
    for d in DEVICE_TYPES if device_type is None else (device_type,):
        if backend == "auto":
            _state["per_op"].pop((op, d), None)
        else:
            _state["per_op"][(op, d)] = backend
    _refresh()


def _from_environment():
    _state["backend"] = _check_backend(os.environ.get("SSLFAST_BACKEND", "auto").strip().lower() or "auto")
    spec = os.environ.get("SSLFAST_OP_BACKEND", "").strip()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        target, sep, backend = item.partition("=")
        op, _, device_type = target.partition(":")
        if not sep:
            raise ValueError(f"SSLFAST_OP_BACKEND entries are op=backend or op:device=backend, got {item!r}")
        set_op_backend(op.strip(), backend.strip().lower(), device_type.strip() or None)


def refresh() -> None:
    """Resolve the table again (after a backend registered more kernels)."""
    _tables.clear()
    _refresh()


_from_environment()
_refresh()
