"""Per-call host cost: every public fused op on tiny tensors, one thread, against its eager
reference (``python -m sslfast.bench --only overhead``).

The kernels' work is about zero at these sizes, so the times measure what a call costs on the
host: argument checks, backend choice, dispatch, autograd bookkeeping, allocation. On GPUs the
small ops are host-bound, so the CPU number predicts them. Each timed sample is ``CALLS``
back-to-back calls (one is too short to time alone), timed with the calling thread's CPU clock
(torch runs one thread here, so that is the call's whole cost, and other processes on a shared
machine do not inflate it); sslfast, eager and compile are interleaved round by round as in every
other family.

Target (docs/ARCHITECTURE.md, "Per-call cost"): forward <= 25 us, and forward+backward <= 0.5x
the eager reference or <= 60 us, whichever is larger. The table's last column says whether each
record meets it.
"""

from __future__ import annotations

import dataclasses

import torch

import sslfast

from . import augment, contrastive, diffusion, ema, gnn, masking
from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "overhead"
CALLS = 40
ROUNDS = 25
FWD_LIMIT_US = 25.0
BWD_LIMIT_US = 60.0
BWD_EAGER_FRACTION = 0.5


def meets_target(mode: str, impls: dict) -> tuple:
    """(met, text) for one record: the per-call target of its mode."""
    ours = impls["sslfast"]["median_ms"] * 1e3
    if mode == "fwd":
        return ours <= FWD_LIMIT_US, f"target fwd <= {FWD_LIMIT_US:.0f} us"
    eager = impls["eager"].get("median_ms")
    limit = max(BWD_LIMIT_US, BWD_EAGER_FRACTION * eager * 1e3) if eager else BWD_LIMIT_US
    return ours <= limit, f"target fwd+bwd <= {limit:.0f} us"


def _sddmm_case(n, e, f) -> Case:
    def make_inputs(device, dtype, requires_grad):
        graph = gnn._graph(n, e, "random", device)
        a = masking._randn((n, f), device, dtype, 11).requires_grad_(requires_grad)
        b = masking._randn((n, f), device, dtype, 12).requires_grad_(requires_grad)
        return Inputs((graph, a, b), {}, [a, b] if requires_grad else [])

    return Case("gnn", "sddmm", f"random N={n} E={e} F={f}", {"N": n, "E": e, "F": f}, make_inputs,
                sslfast.sddmm, sslfast.reference.gnn.sddmm, backend=backend_of("sddmm"))


def _q_sample_case(shape) -> Case:
    """q_sample alone (gradient to x0), noise drawn in the kernel vs ``torch.randn_like``."""
    train = diffusion.train_case(shape)

    def make_inputs(device, dtype, requires_grad):
        x0, _, t, schedule = train.make_inputs(device, dtype, False).args
        x0 = x0.requires_grad_(requires_grad)
        return Inputs((x0, t, schedule), {}, [x0] if requires_grad else [])

    def eager(x0, t, schedule):
        return diffusion.reference.q_sample(x0, t, schedule, torch.randn_like(x0))

    return Case("diffusion", "q_sample", train.label, train.params, make_inputs,
                sslfast.diffusion.q_sample, eager, backend=backend_of("q_sample"))


def _diffusion_loss_case(shape) -> Case:
    train = diffusion.train_case(shape)

    def make_inputs(device, dtype, requires_grad):
        x0, pred, t, schedule = train.make_inputs(device, dtype, requires_grad).args
        return Inputs((pred, x0, t, schedule), {"snr_gamma": 5.0}, [pred] if requires_grad else [])

    return Case("diffusion", "diffusion_loss", train.label, train.params, make_inputs,
                sslfast.diffusion.diffusion_loss, diffusion.reference.diffusion_loss,
                backend=backend_of("diffusion_loss"))


def tiny_cases() -> list:
    """One tiny case per public fused op (sampler steps, augment_images and ema_ run forward only)."""
    graph = dict(n=16, e=48)
    image = (2, 3, 4, 4)
    return [
        contrastive.nt_xent_case(16, 16), contrastive.info_nce_case(8, 16),
        contrastive.info_nce_case(8, 16, queue=32), contrastive.clip_case(8, 16),
        contrastive.siglip_case(8, 16), contrastive.supcon_case(16, 16, classes=4),
        masking.random_masking_case(2, 16, 8), masking.unshuffle_case(2, 16, 8),
        masking.loss_case(2, 8, 4),
        _q_sample_case(image), _diffusion_loss_case(image),
        *[diffusion.step_case(kind, image) for kind in diffusion.STEPS],
        gnn.spmm_case(**graph, f=8), gnn.gcn_case(**graph, f=8), _sddmm_case(**graph, f=8),
        gnn.gat_case(**graph, heads=2, f=4, modes=("fwd", "fwd+bwd")),
        augment.views_case(2, 1, 6, 4), augment.mask_case(8, 6, per_column=True),
        ema.ema_case([(4, 3), (7,), (2, 2, 2)], "tiny"),
    ]


def _training_inputs(case: Case):
    """The forward as a training step runs it: differentiable inputs require grad in both modes
    (autograd's bookkeeping is part of a forward's cost); sampler steps never do."""
    if "fwd+bwd" not in case.modes:
        return case.make_inputs
    return lambda device, dtype, requires_grad: case.make_inputs(device, dtype, True)


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    out = []
    for case in tiny_cases():
        out.append(dataclasses.replace(case, family=FAMILY, label=f"{case.label} [{case.family}]",
                                       make_inputs=_training_inputs(case),
                                       calls_per_sample=CALLS, rounds=ROUNDS, threads=1, cpu_clock="thread",
                                       target=meets_target,
                                       headline=False, cost=1.0, flops=None, bytes=None, extra_flops={},
                                       extra_bytes={}, baselines={}))
    return out
