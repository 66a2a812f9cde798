"""The contract every public op keeps, as a table: one ``Row`` per op of ``sslfast._dispatch.OP_TABLE``
(a few rows where an op has modes that need their own inputs or tolerances: in-kernel noise,
attention dropout, the sampler steps). tests/test_contract.py checks each row on every backend
that can run it here:

* parity: the public op vs ``sslfast.reference`` in the same dtype ("eager") and in float64
  ("truth"), outputs and the gradients of ``grads``, by the tolerance rule of
  docs/ARCHITECTURE.md (``exact`` outputs bit for bit), for every mode, dtype and shape;
* gradcheck (float64, the kernel backends) of the ``gradcheck`` modes at the ``tiny`` shape;
* opcheck of the core ops ``opcheck(ops, native)`` lists, in each namespace with kernels here;
* ``torch.compile(fullgraph=True)`` gives eager's outputs and gradients (``compile_modes``);
* determinism: two calls agree bit for bit; ``random`` rows (seeded) change with the seed;
* ``nan``: NaN in, NaN out where it must;
* ``bad``: each bad input raises the error naming the argument, before any kernel runs.

A row's ``make(shape, dtype, mode)`` builds seeded inputs on DEVICE as a dict (None: that shape
does not exist in that mode); ``call`` and ``reference`` take that dict. Floating-point inputs are
cast to float64 for the truth.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

import sslfast
from sslfast import diffusion as D
from sslfast.graph import Graph
from sslfast.reference import augment as ref_augment
from sslfast.reference import contrastive as ref_contrastive
from sslfast.reference import diffusion as ref_diffusion
from sslfast.reference import ema as ref_ema
from sslfast.reference import gnn as ref_gnn
from sslfast.reference import masking as ref_masking

from helpers import (DEVICE, DEVICE_TYPE, FLOORS, GRAPHS, gen, hub_edges, interpreted, per_sample_t, rand_noise,
                     random_edges, randn, schedule)

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
I32, I64 = torch.int32, torch.int64
CPU = DEVICE_TYPE == "cpu"
# In-kernel noise is drawn in float32 (Philox, Box-Muller) in every dtype: float64 results carry
# float32 noise, whose transcendental functions may differ from torch's in the last bits.
NOISE_FLOORS = {**FLOORS, F64: 1e-6}
# Checks that read values (timesteps, sigmas, boxes) run on CPU in the C++ kernels and in the
# reference fallback; on CUDA they are asynchronous device asserts, or the kernels clamp.
VALUE_CHECKED = ("reference", "native") if CPU else ()


@dataclass(frozen=True)
class Bad:
    """One bad input: ``call()`` raises ``error`` with a message matching ``match`` (a regex that
    names the argument). ``backends``: None for a check in Python, which must fire before any
    kernel runs, on every backend; else the backends whose kernel (or whose reference fallback)
    makes the check, e.g. on values."""

    call: Callable[[], Any]
    error: type
    match: str
    backends: tuple | None = None


@dataclass(frozen=True)
class Row:
    """One public op (or one mode of it that needs its own inputs or tolerances) and its contract."""

    name: str  # the test id
    op: str  # its entry in sslfast._dispatch.OP_TABLE
    make: Callable  # (shape, dtype, mode kwargs) -> inputs dict, or None
    call: Callable  # inputs -> the public op's result
    reference: Callable  # inputs -> sslfast.reference's result
    shapes: tuple
    small_shapes: tuple | None = None  # for the Triton interpreter (default: shapes)
    modes: dict = field(default_factory=lambda: {"": {}})  # name -> kwargs for make (a "grads" key overrides)
    dtypes: tuple = (F64, F32, BF16, F16)  # a mode's "dtypes" key narrows them
    reference_dtypes: tuple | None = None  # the dtypes the reference backend runs in (default: all)
    grads: tuple = ()  # the input names that get gradients
    exact: Callable | None = None  # dtype -> indices of the outputs equal to eager's bit for bit
    floors: dict = field(default_factory=lambda: FLOORS)
    random: bool = False  # seeded by inputs["seed"]: another seed must change the result
    inplace: bool = False  # the op writes its inputs: every call gets copies
    tiny: Any = None  # the shape of the gradcheck and compile inputs
    big: Any = None  # the determinism check's shape on the kernel backends (default: the largest shape)
    gradcheck: tuple = ()  # the modes to gradcheck
    gradcheck_fast_triton: bool = False  # gradcheck's fast mode under the Triton interpreter
    compile_modes: tuple | None = None  # default: the first mode; () for none
    opcheck: Callable | None = None  # (torch.ops namespace, is it sslfast::) -> [(op, args[, test_utils])]
    nan: Callable | None = None  # () -> (a call with NaN inputs, a check of its result)
    bad: Callable | None = None  # () -> [Bad]

    def shapes_for(self, backend):
        return self.small_shapes if interpreted(backend) and self.small_shapes else self.shapes

    def determinism_shapes(self, backend):
        """Largest first: ``big`` (not for the Triton interpreter), then the parity shapes."""
        big = () if self.big is None or interpreted(backend) else (self.big,)
        return big + tuple(reversed(self.shapes_for(backend)))

    def dtypes_for(self, mode, backend):
        dtypes = self.modes[mode].get("dtypes", self.dtypes)
        if backend == "reference" and self.reference_dtypes is not None:
            dtypes = tuple(d for d in dtypes if d in self.reference_dtypes)
        return dtypes

    def grads_for(self, mode):
        return self.modes[mode].get("grads", self.grads)

    def compiled_modes(self):
        return tuple(self.modes)[:1] if self.compile_modes is None else self.compile_modes


def _scalar(value, dtype=F32):
    return torch.tensor(value, dtype=dtype, device=DEVICE)


def _other_device(t):
    return t.cpu() if t.is_cuda else t.cuda()


# ====================================================================== contrastive

CONTRASTIVE_DTYPES = (F64, F32, BF16, F16) if CPU else (F32, BF16, F16)
CONTRASTIVE_SHAPES = ((1, 1), (3, 7), (129, 130))
CONTRASTIVE_SMALL = ((1, 1), (3, 7), (65, 130))  # 65 x 130: several 32-row blocks, two D chunks


def _normalized(*shape, seed, requires_grad=True):
    return F.normalize(randn(*shape, dtype=F32, seed=seed), dim=1).requires_grad_(requires_grad)


def _is_nan(loss):
    assert torch.isnan(loss), loss


def _nan_pair():
    z1, z2 = randn(5, 4, dtype=F32, seed=80), randn(5, 4, dtype=F32, seed=81)
    z1[2, 1] = float("nan")
    return z1, z2


def _make_nt_xent(shape, dtype, mode):
    if shape[0] == 1 and mode["exclude_positive"]:
        return None  # DCL with one pair has an empty denominator
    return dict(z1=randn(*shape, dtype=dtype, seed=1), z2=randn(*shape, dtype=dtype, seed=2), **mode)


def _opcheck_nt_xent(ops, native):
    z1, z2 = randn(3, 5, dtype=F32, seed=28, requires_grad=True), randn(3, 5, dtype=F32, seed=29, requires_grad=True)
    z = _normalized(6, 5, seed=30)
    _, lse = ops.nt_xent_fwd(z, 0.5, False)
    return [(ops.nt_xent, (z1, z2, 0.5, True, False)),
            (ops.nt_xent, (z1, z2, 0.5, True, True)),
            (ops.nt_xent_fwd, (z, 0.5, False)),
            (ops.nt_xent_fwd, (z, 0.5, True)),
            (ops.nt_xent_bwd, (_scalar(1.5), z.detach(), lse.detach(), 0.5, False))]


def _bad_nt_xent():
    z = torch.randn(4, 8, device=DEVICE)
    cases = [
        Bad(lambda: sslfast.nt_xent(z, torch.randn(5, 8, device=DEVICE)), ValueError, "z2"),
        Bad(lambda: sslfast.nt_xent(z, torch.randn(4, 9, device=DEVICE)), ValueError, "z2"),
        Bad(lambda: sslfast.nt_xent(torch.randn(4, device=DEVICE), z), ValueError, "z1.*2-D"),
        Bad(lambda: sslfast.nt_xent(torch.ones(4, 8, dtype=torch.long, device=DEVICE), z), TypeError, "z1.*floating"),
        Bad(lambda: sslfast.nt_xent(z, z, 0.0), ValueError, "temperature"),
        Bad(lambda: sslfast.nt_xent(z, z, float("nan")), ValueError, "temperature"),
        Bad(lambda: sslfast.nt_xent(torch.randn(0, 8, device=DEVICE), torch.randn(0, 8, device=DEVICE)), ValueError,
            "z1.*at least one row"),
        Bad(lambda: sslfast.nt_xent(z, z.double()), TypeError, "z2.*dtype"),
        # the core ops check their inputs too (direct torch.ops calls)
        Bad(lambda: torch.ops.sslfast.nt_xent_fwd(torch.randn(3, 4), 0.5, False), RuntimeError,
            "z must hold 2N rows", ("native",)),
        Bad(lambda: torch.ops.sslfast.nt_xent_bwd(torch.tensor(1.0), torch.randn(4, 4), torch.randn(3), 0.5, False),
            RuntimeError, "lse must have shape", ("native",)),
    ]
    if torch.cuda.is_available():
        cases.append(Bad(lambda: sslfast.nt_xent(z, _other_device(z)), ValueError, "z2.*(cuda|cpu)"))
    return cases


NT_XENT = Row(
    "nt_xent", "nt_xent", _make_nt_xent,
    call=lambda i: sslfast.nt_xent(i["z1"], i["z2"], i["temperature"], exclude_positive=i["exclude_positive"]),
    reference=lambda i: ref_contrastive.nt_xent(i["z1"], i["z2"], i["temperature"],
                                                exclude_positive=i["exclude_positive"]),
    shapes=CONTRASTIVE_SHAPES, small_shapes=CONTRASTIVE_SMALL, dtypes=CONTRASTIVE_DTYPES,
    modes={"simclr": dict(temperature=0.5, exclude_positive=False),
           "simclr-t0.01": dict(temperature=0.01, exclude_positive=False),
           "dcl": dict(temperature=0.5, exclude_positive=True),
           "dcl-t0.01": dict(temperature=0.01, exclude_positive=True)},
    grads=("z1", "z2"), tiny=(3, 5), big=(700, 64), gradcheck=("simclr", "dcl"),
    opcheck=_opcheck_nt_xent,
    nan=lambda: (lambda: sslfast.nt_xent(*_nan_pair()), _is_nan),
    bad=_bad_nt_xent,
)


def _make_info_nce(shape, dtype, mode):
    n, d = shape
    queue = randn(mode["queue_rows"], d, dtype=dtype, seed=5) if mode["queue_rows"] else None
    return dict(query=randn(n, d, dtype=dtype, seed=3), key=randn(n, d, dtype=dtype, seed=4), queue=queue, **mode)


def _opcheck_info_nce(ops, native):
    q, k = _normalized(3, 5, seed=31), _normalized(3, 5, seed=32)
    queue = _normalized(4, 5, seed=33, requires_grad=False)
    g = _scalar(1.5)
    _, lse, empty = ops.info_nce_fwd(q, k, queue, 0.1, True, False)
    cases = [(ops.info_nce, (q, k, queue, 0.1, True, True)),
             (ops.info_nce, (q, k, queue, 0.1, True, False)),
             (ops.info_nce_fwd, (q, k, queue, 0.1, True, False)),
             (ops.info_nce_fwd, (q, k, None, 0.1, True, False)),
             (ops.info_nce_bwd, (g, q.detach(), k.detach(), queue, lse.detach(), empty.detach(), 0.1, True))]
    if native:  # MoCo's folded queue gradient: the C++ kernel's
        _, m_lse, folded = ops.info_nce_fwd(q, k, queue, 0.1, False, True)
        cases += [(ops.info_nce_fwd, (q, k, queue, 0.1, False, True)),
                  (ops.info_nce_bwd, (g, q.detach(), k.detach(), queue, m_lse.detach(), folded.detach(), 0.1, False))]
    return cases


def _bad_info_nce():
    z = torch.randn(4, 8, device=DEVICE)
    return [
        Bad(lambda: sslfast.info_nce(z, z, -1.0), ValueError, "temperature"),
        Bad(lambda: sslfast.info_nce(z, z, 0.1, torch.randn(10, 7, device=DEVICE)), ValueError, "queue.*D = 8"),
        Bad(lambda: sslfast.info_nce(z, torch.randn(3, 8, device=DEVICE)), ValueError, "key"),
    ]


INFO_NCE = Row(
    "info_nce", "info_nce", _make_info_nce,
    call=lambda i: sslfast.info_nce(i["query"], i["key"], 0.07, i["queue"], in_batch_negatives=i["in_batch"]),
    reference=lambda i: ref_contrastive.info_nce(i["query"], i["key"], 0.07, i["queue"],
                                                 in_batch_negatives=i["in_batch"]),
    shapes=CONTRASTIVE_SHAPES, small_shapes=CONTRASTIVE_SMALL, dtypes=CONTRASTIVE_DTYPES,
    modes={"queue": dict(in_batch=True, queue_rows=50), "moco": dict(in_batch=False, queue_rows=50),
           "in-batch": dict(in_batch=True, queue_rows=0), "positive-only": dict(in_batch=False, queue_rows=0)},
    grads=("query", "key"), tiny=(3, 5), big=(700, 64), gradcheck=("queue", "moco"),
    opcheck=_opcheck_info_nce,
    nan=lambda: (lambda: (lambda z1, z2: sslfast.info_nce(z1, z2, 0.1, z2))(*_nan_pair()), _is_nan),
    bad=_bad_info_nce,
)


def _make_pair(shape, dtype, mode, scale, bias):
    n, d = shape
    return dict(image=randn(n, d, dtype=dtype, scale=d ** -0.5, seed=6),
                text=randn(n, d, dtype=dtype, scale=d ** -0.5, seed=7),
                logit_scale=_scalar(scale), logit_bias=_scalar(bias) if mode.get("bias", True) else None)


def _pair_args(i):
    return i["image"], i["text"], i["logit_scale"], i["logit_bias"]


def _opcheck_pair(siglip):
    def cases(ops, native):
        q, k = _normalized(3, 5, seed=34), _normalized(3, 5, seed=35)
        scale = _scalar(4.0).requires_grad_()
        bias = _scalar(-1.0).requires_grad_()
        g = _scalar(1.5)
        if siglip:
            out = [(ops.siglip_loss, (q, k, scale, bias)),
                   (ops.siglip_loss_fwd, (q, k, scale, bias, False)),
                   (ops.siglip_loss_bwd, (g, q.detach(), k.detach(), scale.detach(), bias.detach()))]
            return out + ([(ops.siglip_loss_fwd, (q, k, scale, bias, True))] if native else [])
        _, row_lse, col_lse = ops.clip_loss_fwd(q, k, scale, bias)
        return [(ops.clip_loss, (q, k, scale, bias)),
                (ops.clip_loss, (q, k, scale, None)),
                (ops.clip_loss_fwd, (q, k, scale, bias)),
                (ops.clip_loss_fwd, (q, k, scale, None)),
                (ops.clip_loss_bwd, (g, q.detach(), k.detach(), scale.detach(), bias.detach(), row_lse.detach(),
                                     col_lse.detach()))]
    return cases


def _nan_pair_loss(fn):
    def run():
        z1, z2 = _nan_pair()
        return fn(z1, z2, _scalar(5.0), _scalar(-1.0))
    return lambda: (run, _is_nan)


def _bad_clip():
    z, scale = torch.randn(4, 8, device=DEVICE), _scalar(1.0)
    return [
        Bad(lambda: sslfast.clip_loss(z, torch.randn(5, 8, device=DEVICE), scale), ValueError, "text"),
        Bad(lambda: sslfast.clip_loss(z, z, torch.ones(2, device=DEVICE)), ValueError, "logit_scale"),
        Bad(lambda: torch.ops.sslfast.clip_loss_fwd(torch.ones(4, 4, dtype=torch.long), torch.randn(4, 4),
                                                    torch.tensor(1.0), None),
            RuntimeError, "image must be floating point", ("native",)),
    ]


CLIP_LOSS = Row(
    "clip_loss", "clip_loss", lambda shape, dtype, mode: _make_pair(shape, dtype, mode, 30.0, -2.0),
    call=lambda i: sslfast.clip_loss(*_pair_args(i)),
    reference=lambda i: ref_contrastive.clip_loss(*_pair_args(i)),
    shapes=CONTRASTIVE_SHAPES, small_shapes=CONTRASTIVE_SMALL, dtypes=CONTRASTIVE_DTYPES,
    modes={"bias": dict(bias=True), "no-bias": dict(bias=False)},
    grads=("image", "text", "logit_scale", "logit_bias"), tiny=(3, 5), big=(700, 64), gradcheck=("bias",),
    opcheck=_opcheck_pair(siglip=False),
    nan=_nan_pair_loss(sslfast.clip_loss),
    bad=_bad_clip,
)

SIGLIP_LOSS = Row(
    "siglip_loss", "siglip_loss", lambda shape, dtype, mode: _make_pair(shape, dtype, mode, 10.0, -10.0),
    call=lambda i: sslfast.siglip_loss(*_pair_args(i)),
    reference=lambda i: ref_contrastive.siglip_loss(*_pair_args(i)),
    shapes=CONTRASTIVE_SHAPES, small_shapes=CONTRASTIVE_SMALL, dtypes=CONTRASTIVE_DTYPES,
    grads=("image", "text", "logit_scale", "logit_bias"), tiny=(3, 5), big=(700, 64), gradcheck=("",),
    opcheck=_opcheck_pair(siglip=True),
    nan=_nan_pair_loss(sslfast.siglip_loss),
    bad=lambda: [Bad(lambda: sslfast.siglip_loss(torch.randn(4, 8, device=DEVICE), torch.randn(4, 8, device=DEVICE),
                                                 _scalar(1.0), None), TypeError, "logit_bias")],
)


def _labels(n, seed):
    """Class labels with several rows per class and, for n > 3, classes of a single row."""
    return torch.randint(0, max(1, n // 3), (n,), generator=gen(seed)).to(DEVICE)


def _opcheck_supcon(ops, native):
    z = _normalized(6, 5, seed=36)
    labels = _labels(6, 37)
    cases = []
    for pairwise in (False, True):
        _, lse, stats = ops.supcon_fwd(z, labels, 0.1, pairwise)
        cases += [(ops.supcon, (z, labels, 0.1, True, pairwise)),
                  (ops.supcon_fwd, (z, labels, 0.1, pairwise)),
                  (ops.supcon_bwd, (_scalar(1.5), z.detach(), labels, lse.detach(), stats.detach(), 0.1, pairwise))]
    return cases


def _bad_supcon():
    x = torch.randn(4, 3, device=DEVICE)
    return [
        Bad(lambda: sslfast.supcon(x, torch.zeros(3, dtype=torch.int64, device=DEVICE)), ValueError, "labels"),
        Bad(lambda: sslfast.supcon(x, torch.zeros(4, dtype=torch.int64, device=DEVICE), 0.0), ValueError,
            "temperature"),
        Bad(lambda: sslfast.supcon(x, torch.zeros(4, device=DEVICE)), TypeError, "labels"),
    ]


SUPCON = Row(
    "supcon", "supcon",
    lambda shape, dtype, mode: dict(features=randn(*shape, dtype=dtype, seed=9), labels=_labels(shape[0], 10), **mode),
    call=lambda i: sslfast.supcon(i["features"], i["labels"], 0.1, pairwise=i["pairwise"]),
    reference=lambda i: ref_contrastive.supcon(i["features"], i["labels"], 0.1, pairwise=i["pairwise"]),
    shapes=CONTRASTIVE_SHAPES, small_shapes=CONTRASTIVE_SMALL, dtypes=CONTRASTIVE_DTYPES,
    modes={"supcon": dict(pairwise=False), "pairwise": dict(pairwise=True)},
    grads=("features",), tiny=(6, 5), big=(700, 64), gradcheck=("supcon", "pairwise"),
    opcheck=_opcheck_supcon,
    bad=_bad_supcon,
)

# ====================================================================== masking

MASK_DTYPES = (F64, F32, BF16)
# (N, prefix, L, D, ratio or keep, index dtype): L = 1, 2, odd, and ViT's 196 patches + a cls token.
MASK_SHAPES = ((2, 0, 1, 3, 0.0, I64), (3, 0, 2, 5, 0.5, I32), (3, 0, 2, 5, 0.0, I32), (2, 1, 7, 4, 0.75, I64),
               (2, 1, 7, 4, 0.5, I64), (2, 1, 196, 6, 0.75, I32), (2, 1, 196, 6, 0.5, I32))
SMALL_MASK_SHAPES = MASK_SHAPES[:5] + ((1, 1, 196, 3, 0.75, I32), (1, 1, 196, 3, 0.5, I32))
# pos_embed: none, [1, P + L, D], [P + L, D]
POS_MODES = {"": dict(pos=None), "pos": dict(pos=(1,)), "pos2d": dict(pos=())}


def _pos(mode, tokens, d, dtype):
    return None if mode["pos"] is None else randn(*mode["pos"], tokens, d, dtype=dtype, seed=2)


def _make_random_masking(shape, dtype, mode):
    n, prefix, length, d, ratio, index_dtype = shape
    return dict(x=randn(n, prefix + length, d, dtype=dtype, seed=1), pos_embed=_pos(mode, prefix + length, d, dtype),
                noise=rand_noise(n, length, seed=3), ratio=ratio, prefix=prefix, index_dtype=index_dtype)


def _random_masking(module):
    return lambda i: module.random_masking(i["x"], i["ratio"], pos_embed=i["pos_embed"], num_prefix_tokens=i["prefix"],
                                           noise=i["noise"], index_dtype=i["index_dtype"])


def _opcheck_random_masking(ops, native):
    n, prefix, length, d = 2, 1, 5, 3
    x = randn(n, prefix + length, d, dtype=F32, seed=1, requires_grad=True)
    pos = randn(1, prefix + length, d, dtype=F32, seed=2, requires_grad=True)
    noise = rand_noise(n, length, seed=3)
    ids = torch.argsort(noise, dim=1).argsort(dim=1)
    vis = randn(n, prefix + 2, d, dtype=F32, seed=4)
    return [(ops.random_masking, (x, noise, pos, 2, prefix, False)),
            (ops.random_masking_fwd, (x, noise, pos, 2, prefix, False)),
            (ops.random_masking_fwd, (x, noise, None, 3, prefix, True)),
            (ops.random_masking_bwd, (vis, ids, prefix))]


def _nan_random_masking():
    x = randn(2, 5, 3, seed=1)
    x[:, :, 1] = float("nan")

    def check(result):
        vis = result[0]
        assert torch.isnan(vis[:, :, 1]).all() and torch.isfinite(vis[:, :, 0]).all()
    return lambda: sslfast.random_masking(x, 0.4, noise=rand_noise(2, 5, seed=2)), check


def _bad_random_masking():
    x = randn(2, 5, 4)
    return [
        Bad(lambda: sslfast.random_masking(x, 1.0), ValueError, "mask_ratio"),
        Bad(lambda: sslfast.random_masking(x, -0.1), ValueError, "mask_ratio"),
        Bad(lambda: sslfast.random_masking(x, "0.5"), TypeError, "mask_ratio"),
        Bad(lambda: sslfast.random_masking(x[:, :1], 0.5), ValueError, "keeps zero"),
        Bad(lambda: sslfast.random_masking(x[0], 0.5), ValueError, "x must be 3-D"),
        Bad(lambda: sslfast.random_masking(x.long(), 0.5), TypeError, "x must be a floating"),
        Bad(lambda: sslfast.random_masking(x, 0.5, num_prefix_tokens=5), ValueError, "num_prefix_tokens"),
        Bad(lambda: sslfast.random_masking(x, 0.5, pos_embed=randn(1, 4, 4)), ValueError, "pos_embed"),
        Bad(lambda: sslfast.random_masking(x, 0.5, noise=torch.rand(2, 4, device=DEVICE)), ValueError,
            "noise must have shape"),
        Bad(lambda: sslfast.random_masking(x, 0.5, index_dtype=torch.int16), TypeError, "index_dtype"),
        Bad(lambda: sslfast.random_masking(x, 0.5, generator=1), TypeError, "generator"),
    ]


RANDOM_MASKING = Row(
    "random_masking", "random_masking", _make_random_masking,
    call=_random_masking(sslfast), reference=_random_masking(ref_masking),
    shapes=MASK_SHAPES, small_shapes=SMALL_MASK_SHAPES, dtypes=MASK_DTYPES, modes=POS_MODES,
    grads=("x", "pos_embed"),
    exact=lambda dtype: (0, 1, 2) if dtype in (F32, F64) else (1, 2),  # ids and mask always; the gather in fp32/64
    tiny=(2, 1, 5, 3, 0.6, I64), gradcheck=("pos2d",), gradcheck_fast_triton=True, compile_modes=("pos",),
    opcheck=_opcheck_random_masking,
    nan=_nan_random_masking,
    bad=_bad_random_masking,
)


def _generator_masking(module):
    def run(i):  # the noise drawn from a generator seeded with i["seed"], on the data's device
        generator = torch.Generator(device=DEVICE).manual_seed(i["seed"])
        return module.random_masking(i["x"], i["ratio"], generator=generator, num_prefix_tokens=i["prefix"])
    return run


RANDOM_MASKING_GENERATOR = Row(  # MAE's default: the noise drawn from a torch.Generator first, then sorted
    "random_masking-generator", "random_masking",
    lambda shape, dtype, mode: dict(_make_random_masking(shape, dtype, POS_MODES[""]), seed=7),
    call=_generator_masking(sslfast), reference=_generator_masking(ref_masking),
    shapes=((2, 1, 7, 4, 0.5, I64), (3, 0, 37, 8, 0.7, I64)), dtypes=MASK_DTYPES,
    grads=("x",), exact=lambda dtype: (0, 1, 2), random=True, compile_modes=(),  # dynamo cannot trace a generator
)


def _make_unshuffle(shape, dtype, mode):
    n, prefix, length, d, ratio, index_dtype = shape
    keep = ref_masking.len_keep(length, ratio)
    ids = torch.argsort(rand_noise(n, length, seed=3), dim=1, stable=True).argsort(dim=1)
    token_shape = (d,) if mode["pos"] == () else (1, 1, d)  # any D-element mask token
    return dict(x_visible=randn(n, prefix + keep, d, dtype=dtype, seed=4), ids_restore=ids.to(index_dtype),
                mask_token=randn(*token_shape, dtype=dtype, seed=5), pos_embed=_pos(mode, prefix + length, d, dtype),
                prefix=prefix)


def _unshuffle(module):
    return lambda i: module.unshuffle(i["x_visible"], i["ids_restore"], i["mask_token"], pos_embed=i["pos_embed"],
                                      num_prefix_tokens=i["prefix"])


def _opcheck_unshuffle(ops, native):
    n, prefix, length, d = 2, 1, 5, 3
    pos = randn(1, prefix + length, d, dtype=F32, seed=2, requires_grad=True)
    ids = torch.argsort(rand_noise(n, length, seed=3), dim=1).argsort(dim=1)
    vis = randn(n, prefix + 2, d, dtype=F32, seed=4, requires_grad=True)
    token = randn(d, dtype=F32, seed=5, requires_grad=True)
    full = randn(n, prefix + length, d, dtype=F32, seed=6)
    return [(ops.unshuffle, (vis, ids, token, pos, prefix)),
            (ops.unshuffle_fwd, (vis, ids, token, pos, prefix)),
            (ops.unshuffle_bwd, (full, ids, 2, prefix))]


def _bad_unshuffle():
    x = randn(2, 5, 4)

    def ids(*shape):
        return torch.zeros(*shape, dtype=torch.long, device=DEVICE)

    return [
        Bad(lambda: sslfast.unshuffle(x, torch.zeros(2, 4, device=DEVICE), x[0, 0]), TypeError, "ids_restore"),
        Bad(lambda: sslfast.unshuffle(x, ids(3, 5), x[0, 0]), ValueError, "ids_restore"),
        Bad(lambda: sslfast.unshuffle(x, ids(2, 4), x[0, 0]), ValueError, "x_visible"),
        Bad(lambda: sslfast.unshuffle(x, ids(2, 5), x[0, 0, :3]), ValueError, "mask_token"),
    ]


UNSHUFFLE = Row(
    "unshuffle", "unshuffle", _make_unshuffle, call=_unshuffle(sslfast), reference=_unshuffle(ref_masking),
    shapes=MASK_SHAPES, small_shapes=SMALL_MASK_SHAPES, dtypes=MASK_DTYPES, modes=POS_MODES,
    grads=("x_visible", "mask_token", "pos_embed"),
    exact=lambda dtype: (0,) if dtype in (F32, F64) else (),
    tiny=(2, 1, 5, 3, 0.6, I64), gradcheck=("pos2d",), gradcheck_fast_triton=True, compile_modes=("pos",),
    opcheck=_opcheck_unshuffle,
    bad=_bad_unshuffle,
)


def _make_patch_loss(shape, dtype, mode):
    n, c, h, w, p = shape
    length = (h // p) * (w // p)
    mask = (rand_noise(n, length, seed=3, ties=False) < 0.6).to(dtype)
    mask[0, 0] = 1  # at least one masked patch
    return dict(pred=randn(n, length, p * p * c, dtype=dtype, seed=1),
                imgs=(randn(n, c, h, w, seed=2, scale=3) + 1).to(dtype), mask=mask, patch_size=p, **mode)


def _ref_patch_loss(i):
    pred = i["pred"]
    loss = ref_masking.masked_patch_loss(pred, i["imgs"], i["mask"].to(pred.dtype), i["patch_size"],
                                         norm_pix=i["norm_pix"], loss=i["loss"])
    return loss.to(F64 if pred.dtype == F64 else F32)  # the loss is float32 (float64 for float64 inputs)


def _opcheck_patch_loss(ops, native):
    pred = randn(2, 6, 48, dtype=F32, seed=7, requires_grad=True)
    imgs = randn(2, 3, 8, 12, dtype=F32, seed=8)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 0, 1, 0, 0]], dtype=F32, device=DEVICE)
    return [(ops.masked_patch_loss, (pred, imgs, mask, 4, True, False)),
            (ops.masked_patch_loss_fwd, (pred, imgs, mask, 4, True, False)),
            (ops.masked_patch_loss_fwd, (pred, imgs, mask, 4, False, True)),
            (ops.masked_patch_loss_bwd, (_scalar(1.5), pred.detach(), imgs, mask, 4, True, False))]


def _bad_patch_loss():
    def ones(*shape):
        return torch.ones(*shape, device=DEVICE)

    loss = sslfast.masked_patch_loss
    return [
        Bad(lambda: loss(randn(1, 4, 12), randn(1, 3, 4, 5), ones(1, 4), 2), ValueError, "not divisible by patch_size"),
        Bad(lambda: loss(randn(1, 4, 11), randn(1, 3, 4, 4), ones(1, 4), 2), ValueError, "pred must have shape"),
        Bad(lambda: loss(randn(1, 4, 12), randn(1, 3, 4, 4), ones(1, 3), 2), ValueError, "mask must have shape"),
        Bad(lambda: loss(randn(1, 4, 12), randn(1, 3, 4, 4).float(), ones(1, 4), 2), TypeError, "imgs has dtype"),
        Bad(lambda: loss(randn(1, 4, 12), randn(1, 3, 4, 4), ones(1, 4), 0), ValueError, "patch_size"),
        Bad(lambda: loss(randn(1, 4, 12), randn(1, 3, 4, 4), ones(1, 4), 2, loss="l3"), ValueError, "loss"),
    ]


MASKED_PATCH_LOSS = Row(
    "masked_patch_loss", "masked_patch_loss", _make_patch_loss,
    call=lambda i: sslfast.masked_patch_loss(i["pred"], i["imgs"], i["mask"], i["patch_size"], norm_pix=i["norm_pix"],
                                             loss=i["loss"]),
    reference=_ref_patch_loss,
    # (N, C, H, W, patch)
    shapes=((1, 1, 2, 2, 2), (2, 3, 8, 12, 4), (3, 3, 32, 16, 8)), small_shapes=((1, 1, 2, 2, 2), (2, 3, 8, 12, 4)),
    dtypes=MASK_DTYPES,
    modes={"l2-norm": dict(loss="l2", norm_pix=True), "l2": dict(loss="l2", norm_pix=False),
           "l1-norm": dict(loss="l1", norm_pix=True), "l1": dict(loss="l1", norm_pix=False)},
    grads=("pred",), tiny=(2, 3, 4, 6, 2), gradcheck=("l2-norm", "l1"), gradcheck_fast_triton=True,
    opcheck=_opcheck_patch_loss,
    bad=_bad_patch_loss,
)

# ====================================================================== diffusion

DIFFUSION_DTYPES = (F64, F32, BF16) if CPU else (F32, BF16)
# [B, ...]: one element per sample, odd sizes, a sample larger than one C++ chunk.
DIFFUSION_SHAPES = ((1, 1), (3, 7), (2, 3, 5, 7), (2, 4, 65, 129))
SMALL_DIFFUSION_SHAPES = DIFFUSION_SHAPES[:3]
S_LINEAR = schedule()
S_SCALED = schedule("scaled_linear")
S_DDIM = schedule("scaled_linear")
S_DDIM.set_timesteps(50, "leading")
S_DDPM = schedule()
S_DDPM.set_timesteps(1000)
S_DDPM100 = schedule()
S_DDPM100.set_timesteps(100)
S_SIGMA = schedule("scaled_linear")
SIGMAS = S_SIGMA.sigmas_for(S_SIGMA.set_timesteps(20, "trailing").double())


def _q_sample_t(kind, batch):
    return per_sample_t(batch, seed=3) if kind == "per-sample" else torch.tensor(999, device=DEVICE)


def _opcheck_q_sample(ops, native):
    x, e = randn(3, 2, 5, dtype=F32, seed=0), randn(3, 2, 5, dtype=F32, seed=4)
    table = randn(7, 2, dtype=F32, seed=9)
    t = torch.tensor([0, 6, 3], device=DEVICE)
    return [(ops.q_sample, (x.clone().requires_grad_(), e, table, t, -1, None, True)),
            (ops.q_sample_fwd, (x, e, table, t, -1, None, False)),
            (ops.q_sample_fwd, (x, None, table, t[2], 7, None, True)),
            (ops.q_sample_bwd, (x, e, table, t, True)),
            (ops.q_sample_bwd, (None, e, table, t, True))]


def _nan_q_sample():
    x, m = randn(2, 6, seed=1), randn(2, 6, seed=2)
    x[0, 3], m[1, 2] = float("nan"), float("nan")

    def check(result):
        x_t = result[0]
        assert x_t[0, 3].isnan() and x_t[1, 2].isnan() and x_t[0, 0].isfinite()
    return lambda: D.q_sample(x, per_sample_t(2), S_LINEAR, m), check


def _bad_q_sample():
    s, x, t = schedule(), randn(2, 3), torch.tensor([1, 2], device=DEVICE)
    return [
        Bad(lambda: D.q_sample(x, torch.tensor([1, 1000], device=DEVICE), s, x), ValueError, "t must be in",
            VALUE_CHECKED),
        Bad(lambda: D.q_sample(x, torch.tensor([-1, 3], device=DEVICE), s, x), ValueError, "got -1", VALUE_CHECKED),
        Bad(lambda: D.q_sample(x, torch.tensor([1, 2, 3], device=DEVICE), s, x), ValueError, "t must be a scalar"),
        Bad(lambda: D.q_sample(x, torch.tensor([1.0, 2.0], device=DEVICE), s, x), TypeError, "t must be an integer"),
        Bad(lambda: D.q_sample(x, t, s, randn(2, 4)), ValueError, "noise must have the shape"),
        Bad(lambda: D.q_sample(x, t, s, x.float()), TypeError, "noise must have the dtype"),
        Bad(lambda: D.q_sample(x, t, s, x, target="x0"), ValueError, "target"),
        Bad(lambda: D.q_sample(x, t, "linear", x), TypeError, "schedule"),
        Bad(lambda: D.q_sample(x, t, s, seed=-3), ValueError, "seed"),
        Bad(lambda: D.q_sample([1.0], t, s, x), TypeError, "x0"),
    ]


Q_SAMPLE = Row(
    "q_sample", "q_sample",
    lambda shape, dtype, mode: dict(x0=randn(*shape, dtype=dtype, seed=1), noise=randn(*shape, dtype=dtype, seed=2),
                                    t=_q_sample_t(mode["t"], shape[0]), target=mode["target"]),
    call=lambda i: D.q_sample(i["x0"], i["t"], S_SCALED, i["noise"], target=i["target"]),
    reference=lambda i: ref_diffusion.q_sample(i["x0"], i["t"], S_SCALED, i["noise"], target=i["target"]),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={f"{target}{suffix}": dict(target=target, t=kind)
           for target in ("epsilon", "sample", "v_prediction")
           for suffix, kind in (("", "per-sample"), ("-t999", "t999"))},
    grads=("x0",), tiny=(2, 3), gradcheck=("epsilon", "v_prediction"), compile_modes=("v_prediction",),
    opcheck=_opcheck_q_sample,
    nan=_nan_q_sample,
    bad=_bad_q_sample,
)


def _opcheck_q_sample_generator(ops, native):
    # A key drawn from a generator: each call draws anew, so eager and traced runs differ by design;
    # the schema, autograd registration and fake still get checked.
    x = randn(3, 2, 5, dtype=F32, seed=0)
    generator = torch.Generator(device=DEVICE).manual_seed(5)
    return [(ops.q_sample_fwd, (x, None, randn(7, 2, dtype=F32, seed=9), torch.tensor(3, device=DEVICE), -1,
                                generator, False),
             ("test_schema", "test_autograd_registration", "test_faketensor"))]


Q_SAMPLE_NOISE = Row(  # the noise drawn in the kernel (Philox, key = seed)
    "q_sample-philox", "q_sample",
    lambda shape, dtype, mode: dict(x0=randn(*shape, dtype=dtype, seed=1), t=per_sample_t(shape[0], seed=3), seed=5,
                                    target=mode["target"]),
    call=lambda i: D.q_sample(i["x0"], i["t"], S_SCALED, seed=i["seed"], target=i["target"]),
    reference=lambda i: ref_diffusion.q_sample(i["x0"], i["t"], S_SCALED,
                                               ref_diffusion.philox_normal_like(i["x0"], i["seed"]),
                                               target=i["target"]),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={"epsilon": dict(target="epsilon"), "v_prediction": dict(target="v_prediction")},
    grads=("x0",), floors=NOISE_FLOORS, random=True, tiny=(2, 3), gradcheck=("epsilon", "v_prediction"),
    opcheck=_opcheck_q_sample_generator,
)


def _opcheck_diffusion_loss(ops, native):
    m, x = randn(3, 2, 5, dtype=F32, seed=2), randn(3, 2, 5, dtype=F32, seed=0)
    w = randn(7, dtype=F32, seed=11).abs()
    t = torch.tensor([0, 6, 3], device=DEVICE)
    g = randn(3, dtype=F32, seed=12)
    return [(ops.diffusion_loss, (m.clone().requires_grad_(), x, w, t, 1)),
            (ops.diffusion_loss, (m.clone().requires_grad_(), x, w, t[1], 0)),
            (ops.diffusion_loss_fwd, (m, x, w, t, 2)),
            (ops.diffusion_loss_bwd, (g, m, x, w, t, 0)),
            (ops.diffusion_loss_bwd, (g[0], m, x, w, t, 1))]


def _nan_diffusion_loss():
    x, m = randn(2, 6, seed=1), randn(2, 6, seed=2)
    x[0, 3], m[1, 2] = float("nan"), float("nan")

    def check(loss):
        assert loss.isnan().all()
    return lambda: D.diffusion_loss(m, x, per_sample_t(2), S_LINEAR, reduction="none"), check


def _bad_diffusion_loss():
    s, x, t = schedule(), randn(2, 3), torch.tensor([1, 2], device=DEVICE)
    return [
        Bad(lambda: D.diffusion_loss(x, x, t, s, prediction_type="eps"), ValueError, "prediction_type"),
        Bad(lambda: D.diffusion_loss(x, x, t, s, snr_gamma=0.0), ValueError, "snr_gamma"),
        Bad(lambda: D.diffusion_loss(x, x, t, s, reduction="max"), ValueError, "reduction"),
    ]


def _diffusion_loss(module):
    return lambda i: module.diffusion_loss(i["model_output"], i["target"], i["t"], S_LINEAR,
                                           prediction_type=i["prediction_type"], snr_gamma=i["snr_gamma"],
                                           reduction=i["reduction"])


DIFFUSION_LOSS = Row(
    "diffusion_loss", "diffusion_loss",
    lambda shape, dtype, mode: dict(model_output=randn(*shape, dtype=dtype, seed=1),
                                    target=randn(*shape, dtype=dtype, seed=2), t=per_sample_t(shape[0], seed=3),
                                    **mode),
    call=_diffusion_loss(D), reference=_diffusion_loss(ref_diffusion),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={f"{kind}-snr{gamma}-{reduction}": dict(prediction_type=kind, snr_gamma=gamma, reduction=reduction)
           for kind, gamma in (("epsilon", None), ("epsilon", 5.0), ("v_prediction", 5.0), ("sample", 1.0))
           for reduction in ("mean", "sum", "none")},
    grads=("model_output", "target"), tiny=(3, 2, 5), gradcheck=("v_prediction-snr5.0-none",),
    compile_modes=("epsilon-snr5.0-mean",),
    opcheck=_opcheck_diffusion_loss,
    nan=_nan_diffusion_loss,
    bad=_bad_diffusion_loss,
)


def _step_inputs(shape, dtype, seed):
    x, m, u, e = (randn(*shape, dtype=dtype, seed=seed + k) for k in range(4))
    return dict(sample=x, model_output=m, uncond=u, noise=e)


STEP_CONFIGS = {
    "epsilon": dict(prediction_type="epsilon"),
    "v-clip": dict(prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.5),
    "sample-clip-clipped": dict(prediction_type="sample", clip_sample=True, use_clipped_model_output=True),
    "eta-guidance": dict(prediction_type="epsilon", eta=0.7, guidance_scale=7.5),
}


def _ddim_t(kind, batch):
    return {"t3": lambda: S_DDIM.timesteps[3], "per-sample": lambda: per_sample_t(batch, seed=4),
            "last": lambda: S_DDIM.timesteps[-1]}[kind]()


def _ddim(module):
    def run(i):
        config = dict(STEP_CONFIGS[i["config"]])
        guided = "guidance_scale" in config
        prev = () if module is D else (i["t"] - S_DDIM.step_ratio,)
        return module.ddim_step(i["model_output"], i["t"], i["sample"], S_DDIM, *prev, noise=i["noise"],
                                uncond=i["uncond"] if guided else None, **config)
    return run


def _opcheck_diffusion_step(ops, native):
    x, m, u, p, e = (randn(3, 2, 5, dtype=F32, seed=k) for k in range(5))
    table = randn(7, 10, dtype=F32, seed=10)
    rows = randn(3, 10, dtype=F32, seed=10)
    t = torch.tensor([0, 6, 3], device=DEVICE)
    return [(ops.diffusion_step, (x, m, u, p, e, table, t, 2.0, True, 1.0, False, -1, None, True)),
            (ops.diffusion_step, (x, m, None, None, None, rows, None, 1.0, False, 1.0, True, 3, None, False))]


def _nan_ddim():
    x, m = randn(2, 6, seed=1), randn(2, 6, seed=2)
    x[0, 3], m[1, 2] = float("nan"), float("nan")

    def check(result):
        prev, x0 = result
        assert prev[0, 3].isnan() and prev[1, 2].isnan() and x0[1, 2].isnan() and prev[0, 0].isfinite()
    return lambda: D.ddim_step(m, S_DDPM100.timesteps[3], x, S_DDPM100, clip_sample=True), check


def _step_bad(kind):
    def cases():
        s = schedule()
        s.set_timesteps(10)
        x, t = randn(2, 3), torch.tensor([1, 2], device=DEVICE)
        zero, minus_one = _scalar(0.0), _scalar(-1.0)
        return {
            "ddim": [Bad(lambda: D.ddim_step(x, t, x, s, uncond=randn(2, 4)), ValueError, "uncond must have the shape"),
                     Bad(lambda: D.ddim_step(x, t, x, s, eta=-1.0), ValueError, "eta")],
            "ddpm": [Bad(lambda: D.ddpm_step(x, t, x, s, noise=x, variance_type="learned"), ValueError,
                         "variance_type")],
            "euler": [Bad(lambda: D.euler_step(x, x, minus_one, zero), ValueError, "sigma", VALUE_CHECKED)],
            "dpmpp": [Bad(lambda: D.dpmpp_2m_step(x, x, 1.0, 0.5, prev_x0=x), ValueError, "sigma_prev")],
        }[kind]
    return cases


DDIM_STEP = Row(
    "ddim_step", "diffusion_step",
    lambda shape, dtype, mode: dict(_step_inputs(shape, dtype, 10), t=_ddim_t(mode["t"], shape[0]),
                                    config=mode["config"]),
    call=_ddim(D), reference=_ddim(ref_diffusion),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={f"{config}-{t}": dict(config=config, t=t) for config in STEP_CONFIGS for t in ("t3", "per-sample", "last")},
    tiny=(2, 3, 4, 4), compile_modes=("eta-guidance-per-sample", "v-clip-t3"),
    opcheck=_opcheck_diffusion_step,
    nan=_nan_ddim,
    bad=_step_bad("ddim"),
)


def _ddpm_t(batch):
    t = per_sample_t(batch, seed=5)
    t[0] = 0  # no noise at t = 0
    return t


def _ddpm(module):
    def run(i):
        prev = () if module is D else (i["t"] - 1,)
        return module.ddpm_step(i["model_output"], i["t"], i["sample"], S_DDPM, *prev, noise=i["noise"],
                                uncond=i["uncond"], prediction_type=i["prediction_type"],
                                variance_type=i["variance_type"], guidance_scale=3.0)
    return run


DDPM_STEP = Row(
    "ddpm_step", "diffusion_step",
    lambda shape, dtype, mode: dict(_step_inputs(shape, dtype, 20), t=_ddpm_t(shape[0]), **mode),
    call=_ddpm(D), reference=_ddpm(ref_diffusion),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={f"{kind}-{variance}": dict(prediction_type=kind, variance_type=variance)
           for variance in ("fixed_small", "fixed_large") for kind in ("epsilon", "sample", "v_prediction")},
    tiny=(2, 3, 4, 4),
    bad=_step_bad("ddpm"),
)


def _noisy_step(module):
    def run(i):
        x, m, t, seed = i["sample"], i["model_output"], i["t"], i["seed"]
        s = S_DDPM100 if i["sampler"] == "ddpm" else S_DDIM
        if module is D:
            return D.ddpm_step(m, t, x, s, seed=seed) if i["sampler"] == "ddpm" else \
                D.ddim_step(m, t, x, s, eta=1.0, seed=seed)
        noise = ref_diffusion.philox_normal_like(x, seed)
        return ref_diffusion.ddpm_step(m, t, x, s, t - s.step_ratio, noise=noise) if i["sampler"] == "ddpm" else \
            ref_diffusion.ddim_step(m, t, x, s, t - s.step_ratio, eta=1.0, noise=noise)
    return run


NOISY_STEP = Row(  # DDPM and DDIM (eta = 1) with the noise drawn in the kernel
    "diffusion_step-philox", "diffusion_step",
    lambda shape, dtype, mode: dict(_step_inputs(shape, dtype, 40), seed=5, **mode),
    call=_noisy_step(D), reference=_noisy_step(ref_diffusion),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={"ddpm": dict(sampler="ddpm", t=S_DDPM100.timesteps[5]), "ddim-eta1": dict(sampler="ddim",
                                                                                     t=S_DDIM.timesteps[4])},
    floors=NOISE_FLOORS, random=True, tiny=(2, 3, 4, 4), compile_modes=("ddpm",),
)


def _sigma_step(module, solver):
    def run(i):
        sigma, sigma_next = SIGMAS[i["step"]], SIGMAS[i["step"] + 1]
        kw = dict(prediction_type=i["prediction_type"], guidance_scale=5.0)
        if solver == "euler":
            return module.euler_step(i["model_output"], i["sample"], sigma, sigma_next, uncond=i["uncond"], **kw)
        if i["second_order"]:
            return module.dpmpp_2m_step(i["model_output"], i["sample"], sigma, sigma_next, i["noise"],
                                        SIGMAS[i["step"] - 1], **kw)
        return module.dpmpp_2m_step(i["model_output"], i["sample"], sigma, sigma_next, uncond=i["uncond"], **kw)
    return run


def _opcheck_sigma_step(ops, native):
    x, m, u, p = (randn(3, 2, 5, dtype=F32, seed=k) for k in range(4))
    sigma = randn(3, dtype=F32, seed=13).abs()
    return [(ops.diffusion_sigma_step, (x, m, None, None, sigma + 0.1, sigma * 0.5, None, "euler", "v_prediction",
                                        1.0, True)),
            (ops.diffusion_sigma_step, (x, m, u, p, sigma[0].double() + 0.1, sigma * 0.5, sigma + 1.0, "dpmpp_2m",
                                        "epsilon", 1.5, False))]


SIGMA_STEP_MODES = {f"{kind}-step{step}": dict(prediction_type=kind, step=step, second_order=False)
                    for kind in ("epsilon", "v_prediction") for step in (0, 7, 19)}
EULER_STEP = Row(
    "euler_step", "diffusion_sigma_step",
    lambda shape, dtype, mode: dict(_step_inputs(shape, dtype, 30), **mode),
    call=_sigma_step(D, "euler"), reference=_sigma_step(ref_diffusion, "euler"),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES, modes=SIGMA_STEP_MODES,
    tiny=(2, 3, 4, 4), compile_modes=("v_prediction-step7",),
    opcheck=_opcheck_sigma_step,
    bad=_step_bad("euler"),
)
DPMPP_2M_STEP = Row(  # second order where diffusers is: 0 < step < 19 (its final step is first order)
    "dpmpp_2m_step", "diffusion_sigma_step",
    lambda shape, dtype, mode: dict(_step_inputs(shape, dtype, 30), **mode),
    call=_sigma_step(D, "dpmpp"), reference=_sigma_step(ref_diffusion, "dpmpp"),
    shapes=DIFFUSION_SHAPES, small_shapes=SMALL_DIFFUSION_SHAPES, dtypes=DIFFUSION_DTYPES,
    modes={**SIGMA_STEP_MODES, **{f"{kind}-2m-step7": dict(prediction_type=kind, step=7, second_order=True)
                                  for kind in ("epsilon", "v_prediction")}},
    tiny=(2, 3, 4, 4), compile_modes=("epsilon-2m-step7",),
    bad=_step_bad("dpmpp"),
)

# ====================================================================== GNN


@functools.cache
def graph(name):
    """(edge_index, num_nodes, Graph) of a named test graph, built once."""
    builders = {**GRAPHS, "random129": lambda: (random_edges(129, 1000, seed=11), 129), "hub": hub_edges}
    edge_index, n = builders[name]()
    return edge_index, n, Graph.from_edge_index(edge_index, n)


def _graph_tensors(g):
    return g.rowptr, g.col, g.colptr, g.row, g.csc_perm, g.hub_rows, g.hub_cols


def _positive(e, dtype, seed):
    return (torch.rand(e, generator=gen(seed), dtype=F64) + 0.1).to(DEVICE, dtype)


def _make_spmm(shape, dtype, mode):
    name, features = shape
    edge_index, n, g = graph(name)
    w = randn(edge_index.shape[1], dtype=dtype, seed=100 + features) if mode["weighted"] else None
    return dict(graph=g, edge_index=edge_index, x=randn(n, features, dtype=dtype, seed=features), edge_weight=w,
                reduce=mode["reduce"])


def _opcheck_spmm(ops, native):
    _, n, g = graph("special")
    x = randn(n, 5, seed=50, requires_grad=True)
    w = randn(g.num_edges, seed=51, requires_grad=True)
    tensors = _graph_tensors(g)
    cases = []
    for reduce in ("sum", "mean", "max", "min"):
        out, arg = ops.spmm_fwd(*tensors, w, x, reduce)
        cases += [(ops.spmm_fwd, tensors + (w, x, reduce)),
                  (ops.spmm_fwd, tensors + (None, x, reduce)),
                  (ops.spmm, tensors + (w, x, reduce)),
                  (ops.spmm_bwd, (torch.ones_like(out),) + tensors + (w.detach(), x.detach(), arg, reduce, True))]
    return cases


def _bad_spmm():
    _, n, g = graph("special")
    x = randn(n, 4, seed=80)
    return [
        Bad(lambda: sslfast.spmm(g, randn(n + 1, 4, seed=81)), ValueError, "x must have num_nodes"),
        Bad(lambda: sslfast.spmm(g, randn(n, seed=82)), ValueError, "x must be 2-D"),
        Bad(lambda: sslfast.spmm(g, torch.ones(n, 4, dtype=torch.long, device=DEVICE)), TypeError,
            "x must be a floating-point"),
        Bad(lambda: sslfast.spmm(g, x, edge_weight=torch.ones(g.num_edges + 1, dtype=F64, device=DEVICE)), ValueError,
            "edge_weight"),
        Bad(lambda: sslfast.spmm(g, x, "prod"), ValueError, "reduce"),
        Bad(lambda: sslfast.spmm("not a graph", x), TypeError, "graph"),
    ]


GNN_DTYPES = (F64, F32, BF16, F16)
# The reference backend (the public ops' eager fallback) in float64: in lower precision it sums in the
# input's precision in CSR order, no better than eager (which sums in edge_index order), only different.
# The kernels accumulate in float32 and run in every dtype.
GNN_REFERENCE_DTYPES = (F64,)
SPMM = Row(
    "spmm", "spmm", _make_spmm,
    call=lambda i: sslfast.spmm(i["graph"], i["x"], i["reduce"], i["edge_weight"]),
    reference=lambda i: ref_gnn.spmm(i["edge_index"], i["x"], i["reduce"], i["edge_weight"]),
    # (graph, features): isolated nodes, self loops, duplicate edges, no edges; a hub split into chunks
    shapes=tuple((name, f) for name in ("random", "special", "no_edges") for f in (1, 7, 33))
    + (("random129", 65), ("hub", 33)),
    dtypes=GNN_DTYPES, reference_dtypes=GNN_REFERENCE_DTYPES,
    modes={**{f"{reduce}{'-weighted' if weighted else ''}":
              dict(reduce=reduce, weighted=weighted)
              for reduce in ("sum", "mean", "max", "min") for weighted in (False, True)},
           "sum-weight-grad-only": dict(reduce="sum", weighted=True, grads=("edge_weight",))},
    grads=("x", "edge_weight"), tiny=("special", 3),
    gradcheck=("sum-weighted", "mean-weighted", "max-weighted", "min-weighted"),
    compile_modes=("mean-weighted", "max", "min-weighted", "sum-weight-grad-only"),
    opcheck=_opcheck_spmm,
    bad=_bad_spmm,
)


def _make_gcn(shape, dtype, mode):
    name, features = shape
    edge_index, n, g = graph(name)
    w = _positive(edge_index.shape[1], dtype, seed=121) if mode["weighted"] else None
    return dict(graph=g, edge_index=edge_index, x=randn(n, features, dtype=dtype, seed=120), edge_weight=w, **mode)


def _gcn(module, graph_key):
    return lambda i: module.gcn_aggregate(i[graph_key], i["x"], add_self_loops=i["add_self_loops"],
                                          normalize=i["normalize"], edge_weight=i["edge_weight"])


def _opcheck_gcn(ops, native):
    _, n, g = graph("special")
    x = randn(n, 5, seed=50, requires_grad=True)
    dinv = g.gcn_norm(True, F64)
    args = (g.rowptr, g.col, g.colptr, g.row, g.hub_rows, g.hub_cols, dinv, x, True)
    return [(ops.gcn_aggregate_fwd, args), (ops.gcn_aggregate, args),
            (ops.gcn_aggregate_bwd, (torch.ones_like(x), g.colptr, g.row, g.hub_cols, dinv, True))]


GCN_AGGREGATE = Row(
    "gcn_aggregate", "gcn_aggregate", _make_gcn, call=_gcn(sslfast, "graph"), reference=_gcn(ref_gnn, "edge_index"),
    shapes=(("random", 9), ("special", 9), ("no_edges", 9), ("hub", 9)),
    dtypes=GNN_DTYPES, reference_dtypes=GNN_REFERENCE_DTYPES,
    modes={f"{'loops' if loops else 'no-loops'}-{'norm' if norm else 'raw'}{'-weighted' if weighted else ''}":
           dict(add_self_loops=loops, normalize=norm, weighted=weighted)
           for loops in (True, False) for norm in (True, False) for weighted in (False, True)},
    grads=("x", "edge_weight"), tiny=("special", 4), gradcheck=("loops-norm", "loops-norm-weighted"),
    compile_modes=("loops-norm", "loops-norm-weighted"),
    opcheck=_opcheck_gcn,
    bad=lambda: [Bad(lambda: sslfast.gcn_aggregate(graph("special")[2], randn(9, 4, seed=83)), ValueError,
                     "x must have num_nodes")],
)


def _make_sddmm(shape, dtype, mode):
    name, features = shape
    edge_index, n, g = graph(name)
    return dict(graph=g, edge_index=edge_index, a=randn(n, features, dtype=dtype, seed=110),
                b=randn(n, features, dtype=dtype, seed=111))


def _opcheck_sddmm(ops, native):
    _, n, g = graph("special")
    a, b = randn(n, 3, seed=113, requires_grad=True), randn(n, 3, seed=114, requires_grad=True)
    tensors = _graph_tensors(g)
    return [(ops.sddmm_fwd, tensors + (a, b)),
            (ops.sddmm, tensors + (g.perm, g.inv_perm, a, b)),
            (ops.sddmm_bwd, (torch.ones(g.num_edges, dtype=F64, device=DEVICE),) + tensors + (a.detach(), b.detach()))]


def _bad_sddmm():
    _, n, g = graph("special")
    a = randn(n, 4, seed=140)
    return [Bad(lambda: sslfast.sddmm(g, a, randn(n + 1, 4, seed=141)), ValueError, "b must have num_nodes"),
            Bad(lambda: sslfast.sddmm(g, a, randn(n, 5, seed=142)), ValueError, "b must have the shape")]


SDDMM = Row(
    "sddmm", "sddmm", _make_sddmm,
    call=lambda i: sslfast.sddmm(i["graph"], i["a"], i["b"]),
    reference=lambda i: ref_gnn.sddmm(i["edge_index"], i["a"], i["b"]),  # in the order of edge_index
    shapes=(("random", 13), ("special", 13), ("no_edges", 13), ("hub", 13)),
    dtypes=GNN_DTYPES, reference_dtypes=GNN_REFERENCE_DTYPES,
    grads=("a", "b"), tiny=("special", 3), gradcheck=("",),
    opcheck=_opcheck_sddmm,
    bad=_bad_sddmm,
)


def _make_gat(shape, dtype, mode):
    name, heads, features = shape
    _, n, g = graph(name)
    return dict(graph=g, h=randn(n, heads, features, dtype=dtype, seed=150),
                alpha_src=randn(n, heads, dtype=dtype, seed=151), alpha_dst=randn(n, heads, dtype=dtype, seed=152),
                **mode)


def _gat(module):
    def run(i):
        args = (i["graph"], i["h"], i["alpha_src"], i["alpha_dst"], i["negative_slope"])
        if module is sslfast:
            return sslfast.gat_aggregate(*args, dropout=i["dropout"], seed=i["seed"])
        return ref_gnn.gat_aggregate(*args, i["dropout"], i["seed"])  # the Graph gives the mask's CSR order
    return run


def _opcheck_gat(ops, native):
    _, n, g = graph("special")
    h = randn(n, 2, 3, seed=150, requires_grad=True)
    a_src, a_dst = randn(n, 2, seed=151, requires_grad=True), randn(n, 2, seed=152, requires_grad=True)
    tensors = _graph_tensors(g)
    out, lse = ops.gat_aggregate_fwd(*tensors, h, a_src, a_dst, 0.2, 0.3, 7)
    return [(ops.gat_aggregate_fwd, tensors + (h, a_src, a_dst, 0.2, 0.0, 0)),
            (ops.gat_aggregate, tensors + (h, a_src, a_dst, 0.2, 0.3, 7)),
            (ops.gat_aggregate_bwd, (torch.ones_like(out),) + tensors + (h.detach(), a_src.detach(), a_dst.detach(),
                                                                         out.detach(), lse.detach(), 0.2, 0.3, 7))]


def _bad_gat():
    _, n, g = graph("special")
    h, a_src, a_dst = randn(n, 2, 3), randn(n, 2), randn(n, 2)
    return [
        Bad(lambda: sslfast.gat_aggregate(g, h, a_src[:, :1], a_dst), ValueError, "alpha_src"),
        Bad(lambda: sslfast.gat_aggregate(g, h[:, 0], a_src, a_dst), ValueError, "h must be 3-D"),
        Bad(lambda: sslfast.gat_aggregate(g, h[:-1], a_src[:-1], a_dst[:-1]), ValueError, "h must have num_nodes"),
        Bad(lambda: sslfast.gat_aggregate(g, h, a_src, a_dst, dropout=1.5), ValueError, "dropout"),
        Bad(lambda: sslfast.gat_aggregate(g, h, a_src, a_dst, dropout=0.5, seed=-1), ValueError, "seed"),
    ]


GAT_SHAPES = (("random", 3, 5), ("special", 3, 5), ("no_edges", 3, 5), ("hub", 3, 5))  # (graph, heads, features)
GAT_AGGREGATE = Row(
    "gat_aggregate", "gat_aggregate", _make_gat, call=_gat(sslfast), reference=_gat(ref_gnn),
    shapes=GAT_SHAPES, dtypes=GNN_DTYPES, reference_dtypes=GNN_REFERENCE_DTYPES,
    modes={"": dict(negative_slope=0.2, dropout=0.0, seed=0),
           "slope0.1": dict(negative_slope=0.1, dropout=0.0, seed=0)},
    grads=("h", "alpha_src", "alpha_dst"), tiny=("special", 2, 3), gradcheck=("slope0.1",),
    opcheck=_opcheck_gat,
    bad=_bad_gat,
)
GAT_DROPOUT = Row(  # attention dropout: the mask a hash of (seed, edge, head), regenerated in the backward
    "gat_aggregate-dropout", "gat_aggregate", _make_gat, call=_gat(sslfast), reference=_gat(ref_gnn),
    shapes=GAT_SHAPES, dtypes=GNN_DTYPES, reference_dtypes=GNN_REFERENCE_DTYPES,
    modes={"p0.3": dict(negative_slope=0.2, dropout=0.3, seed=7)},
    grads=("h", "alpha_src", "alpha_dst"), random=True, tiny=("special", 2, 3), gradcheck=("p0.3",),
)

# ====================================================================== augment

AUGMENT_DTYPES = (F64, F32, BF16, F16)
# (B, C, H, W, out_height, out_width): one pixel, down- and upsampling, the input's size
AUGMENT_SHAPES = ((1, 1, 1, 1, 1, 1), (2, 3, 10, 12, 5, 8), (3, 2, 7, 9, 7, 9), (2, 3, 6, 5, 11, 13))


def _boxes(batch, height, width, seed):
    """(top, left, height, width) per sample, inside the image."""
    g, rows = gen(seed), []
    for _ in range(batch):
        h = int(torch.randint(1, height + 1, (), generator=g))
        w = int(torch.randint(1, width + 1, (), generator=g))
        rows.append([int(torch.randint(0, height - h + 1, (), generator=g)),
                     int(torch.randint(0, width - w + 1, (), generator=g)), h, w])
    return torch.tensor(rows, device=DEVICE)


def _make_augment(shape, dtype, mode):
    batch, channels, height, width, out_height, out_width = shape
    flips = (torch.arange(batch, device=DEVICE) % 2 == 0) if mode["flips"] else None
    return dict(images=randn(batch, channels, height, width, dtype=dtype, seed=1),
                boxes=_boxes(batch, height, width, seed=2), flips=flips, size=(out_height, out_width),
                noise_std=mode["noise_std"], seed=5)


def _augment(module):
    def run(i):
        if module is sslfast:
            return sslfast.augment_images(i["images"], i["boxes"], i["flips"], size=i["size"],
                                          noise_std=i["noise_std"], seed=i["seed"])
        flips = i["flips"] if i["flips"] is not None else torch.zeros(i["boxes"].shape[0], dtype=torch.bool,
                                                                      device=DEVICE)
        return ref_augment.augment_images(i["images"], i["boxes"], flips, i["noise_std"], i["seed"], *i["size"])
    return run


def _opcheck_augment(ops, native):
    images = randn(2, 3, 6, 5, dtype=F32, seed=1, requires_grad=True)
    boxes = _boxes(2, 6, 5, seed=2)
    flips = torch.tensor([True, False], device=DEVICE)
    return [(ops.augment_images, (images, boxes, flips, 0.0, 0, None, 4, 3)),
            (ops.augment_images, (images, boxes, flips, 0.5, 3, None, 7, 8)),
            (ops.augment_images_fwd, (images, boxes, flips, 0.0, 0, None, 4, 3)),
            (ops.augment_images_fwd, (images, boxes, flips, 0.5, 3, None, 7, 8)),
            (ops.augment_images_bwd, (randn(2, 3, 4, 3, dtype=F32, seed=3), boxes, flips, 6, 5))]


def _bad_augment():
    images = randn(2, 3, 6, 5)
    boxes = _boxes(2, 6, 5, seed=2)
    return [
        Bad(lambda: sslfast.augment_images(images[0], boxes), ValueError, "images must be 4-D"),
        Bad(lambda: sslfast.augment_images(images, boxes[:1]), ValueError, "boxes must be an integer tensor"),
        Bad(lambda: sslfast.augment_images(images, boxes.double()), ValueError, "boxes must be an integer tensor"),
        Bad(lambda: sslfast.augment_images(images, boxes, torch.ones(3, dtype=torch.bool, device=DEVICE)), ValueError,
            "flips must have shape"),
        Bad(lambda: sslfast.augment_images(images, boxes, size=(4, 0)), ValueError, r"size\[1\]"),
        Bad(lambda: sslfast.augment_images(images, boxes, size=(4, 3, 2)), ValueError, "size must be"),
        Bad(lambda: sslfast.augment_images(images, boxes, noise_std=-1.0), ValueError, "noise_std"),
        Bad(lambda: sslfast.augment_images(images, boxes, generator=3), TypeError, "generator"),
        Bad(lambda: sslfast.augment_images(images, boxes + 6), ValueError, "boxes.* must lie inside", VALUE_CHECKED),
    ]


AUGMENT_IMAGES = Row(
    "augment_images", "augment_images", _make_augment, call=_augment(sslfast), reference=_augment(ref_augment),
    shapes=AUGMENT_SHAPES, dtypes=AUGMENT_DTYPES,
    modes={"": dict(flips=False, noise_std=0.0), "flips": dict(flips=True, noise_std=0.0)},
    grads=("images",), tiny=(2, 2, 5, 6, 3, 4), gradcheck=("", "flips"), gradcheck_fast_triton=True,
    compile_modes=("flips",),
    opcheck=_opcheck_augment,
    bad=_bad_augment,
)
AUGMENT_NOISE = Row(  # plus noise_std * N(0, 1) drawn in the kernel (Philox, key = seed)
    "augment_images-noise", "augment_images", _make_augment, call=_augment(sslfast), reference=_augment(ref_augment),
    shapes=AUGMENT_SHAPES, dtypes=AUGMENT_DTYPES, modes={"flips": dict(flips=True, noise_std=0.5)},
    grads=("images",), floors=NOISE_FLOORS, random=True, tiny=(2, 2, 5, 6, 3, 4), gradcheck=("flips",),
    gradcheck_fast_triton=True,
)


def _make_drop(shape, dtype, mode):
    return dict(x=randn(*shape, dtype=dtype, seed=1), seed=9, **mode)


def _opcheck_drop(ops, native):
    x = randn(3, 4, 5, dtype=F32, seed=1, requires_grad=True)
    return [(ops.drop_mask, (x, 0.3, 9, False)), (ops.drop_mask, (x, 0.3, 9, True)),
            (ops.drop_mask_fwd, (x, 0.3, 9, False)), (ops.drop_mask_fwd, (x, 0.3, 9, True))]


def _bad_drop():
    x = randn(3, 4)
    return [
        Bad(lambda: sslfast.drop_mask(x, 1.5), ValueError, "p must be in"),
        Bad(lambda: sslfast.drop_mask(x, -0.1), ValueError, "p must be in"),
        Bad(lambda: sslfast.drop_mask(x, float("nan")), ValueError, "p must be a number"),
        Bad(lambda: sslfast.drop_mask(x, "0.5"), TypeError, "p must be a real number"),
        Bad(lambda: sslfast.drop_mask([1.0], 0.5), TypeError, "x must be a torch.Tensor"),
        Bad(lambda: sslfast.drop_mask(x, 0.5, seed=-1), ValueError, "seed"),
        Bad(lambda: sslfast.drop_mask(x, 0.5, generator=2), TypeError, "generator"),
    ]


def _nan_drop():
    """Dropped entries are x * 0, as the reference: a NaN stays NaN whether it is kept or dropped,
    in every dtype the op takes."""
    base = randn(40, 33)
    base[::3, ::2] = float("nan")
    xs = [base.to(dtype) for dtype in AUGMENT_DTYPES]

    def run():
        return [(x, sslfast.drop_mask(x, 0.5, seed=9), sslfast.drop_mask(x, 0.5, per_column=True, seed=9))
                for x in xs]

    def check(outs):
        for x, *dropped in outs:
            for out in dropped:
                assert out.dtype == x.dtype
                assert torch.equal(torch.isnan(out), torch.isnan(x))
                assert (out[~torch.isnan(x)] == 0).any()  # and something was dropped

    return run, check


DROP_SHAPES = ((1,), (7, 5), (3, 4, 33), (64, 300))
SMALL_DROP_SHAPES = DROP_SHAPES[:3]
DROP_MASK = Row(
    "drop_mask", "drop_mask", _make_drop,
    call=lambda i: sslfast.drop_mask(i["x"], i["p"], per_column=i["per_column"], seed=i["seed"]),
    reference=lambda i: ref_augment.drop_mask(i["x"], i["p"], i["seed"], i["per_column"]),
    shapes=DROP_SHAPES, small_shapes=SMALL_DROP_SHAPES, dtypes=AUGMENT_DTYPES,
    modes={"entries": dict(p=0.3, per_column=False), "columns": dict(p=0.3, per_column=True)},
    grads=("x",), exact=lambda dtype: (0,), random=True, tiny=(3, 4), gradcheck=("entries", "columns"),
    compile_modes=("entries", "columns"),
    opcheck=_opcheck_drop,
    bad=_bad_drop,
    nan=_nan_drop,
)
DROP_MASK_EDGES = Row(  # p = 0 keeps everything, p = 1 drops everything: no seed matters
    "drop_mask-p0-p1", "drop_mask", _make_drop, call=DROP_MASK.call, reference=DROP_MASK.reference,
    shapes=DROP_SHAPES, small_shapes=SMALL_DROP_SHAPES, dtypes=AUGMENT_DTYPES,
    modes={f"p{p}{'-columns' if per_column else ''}": dict(p=p, per_column=per_column)
           for p in (0.0, 1.0) for per_column in (False, True)},
    grads=("x",), exact=lambda dtype: (0,), compile_modes=(),
)

# ====================================================================== EMA


def _make_ema(shape, dtype, mode):
    return dict(targets=[randn(*s, dtype=dtype, seed=k) for k, s in enumerate(shape)],
                sources=[randn(*s, dtype=dtype, seed=50 + k) for k, s in enumerate(shape)], **mode)


def _ema(fn):
    def run(i):  # in place: the targets are the result
        fn(i["targets"], i["sources"], i["momentum"])
        return i["targets"]
    return run


def _opcheck_ema(ops, native):
    targets = [randn(3, 4, dtype=F32, seed=1), randn(5, dtype=F32, seed=2)]
    sources = [randn(3, 4, dtype=F32, seed=3), randn(5, dtype=F32, seed=4)]
    return [(ops.ema_, (targets, sources, 0.9))]


def _bad_ema():
    targets, sources = [randn(3, 4, seed=1), randn(5, seed=2)], [randn(3, 4, seed=3), randn(5, seed=4)]
    return [
        Bad(lambda: sslfast.ema_(targets, sources, 1.5), ValueError, "momentum"),
        Bad(lambda: sslfast.ema_(targets, sources[:1], 0.5), ValueError, "length"),
        Bad(lambda: sslfast.ema_(targets, [sources[0], randn(6)], 0.5), ValueError,
            r"sources\[1\] must have the shape"),
        Bad(lambda: sslfast.ema_(targets, [sources[0], sources[1].float()], 0.5), TypeError, r"sources\[1\] has dtype"),
        Bad(lambda: sslfast.ema_([randn(4, 3).t(), targets[1]], sources, 0.5), ValueError,
            r"targets\[0\] must be contiguous"),
        Bad(lambda: sslfast.ema_([[1.0]], [[2.0]], 0.5), TypeError, r"targets\[0\] must be a torch.Tensor"),
    ]


EMA = Row(
    "ema_", "ema_", _make_ema, call=_ema(sslfast.ema_), reference=_ema(ref_ema.ema_),
    shapes=(((5,),), ((3, 4), (5,)), ((1,), (70, 33), (2, 3, 4), (300, 257))), dtypes=(F64, F32, BF16, F16),
    modes={"m0.9": dict(momentum=0.9), "m0.996": dict(momentum=0.996), "m0": dict(momentum=0.0),
           "m1": dict(momentum=1.0)},
    tiny=((3, 4), (5,)), inplace=True,
    opcheck=_opcheck_ema,
    bad=_bad_ema,
)

ROWS = [NT_XENT, INFO_NCE, CLIP_LOSS, SIGLIP_LOSS, SUPCON,
        RANDOM_MASKING, RANDOM_MASKING_GENERATOR, UNSHUFFLE, MASKED_PATCH_LOSS,
        Q_SAMPLE, Q_SAMPLE_NOISE, DIFFUSION_LOSS, DDIM_STEP, DDPM_STEP, NOISY_STEP, EULER_STEP, DPMPP_2M_STEP,
        SPMM, GCN_AGGREGATE, SDDMM, GAT_AGGREGATE, GAT_DROPOUT,
        AUGMENT_IMAGES, AUGMENT_NOISE, DROP_MASK, DROP_MASK_EDGES,
        EMA]
