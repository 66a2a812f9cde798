"""Benchmark cases of the multi-tensor EMA (BYOL / MoCo target networks): every parameter of a
ResNet-18-sized list (62 tensors, 11.2M values, the shapes of torchvision's resnet18) updated in
one call, against lightly's per-parameter loop (eager, the reference) and torch.compile of that
loop. Byte model: read both, write the target (12 bytes per fp32 value)."""

from __future__ import annotations

import torch

import sslfast
from sslfast.reference import ema as reference

from .harness import Case, Context, Inputs, backend_of, register_family

FAMILY = "ema"
SEED = 77


def _resnet18_shapes():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    for cin, cout, blocks in ((64, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 2)):
        for b in range(blocks):
            first_in = cin if b == 0 else cout
            shapes += [(cout, first_in, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
            if b == 0 and cin != cout:
                shapes += [(cout, cin, 1, 1), (cout,), (cout,)]
    return shapes + [(1000, 512), (1000,)]


def ema_case(shapes, label) -> Case:
    values = sum(torch.Size(s).numel() for s in shapes)

    def make_inputs(device, dtype, requires_grad):
        g = torch.Generator().manual_seed(SEED)
        targets = [torch.randn(s, generator=g).to(device, dtype) for s in shapes]
        sources = [torch.randn(s, generator=g).to(device, dtype) for s in shapes]
        return Inputs((targets, sources, 0.996), {}, [])

    return Case(FAMILY, "ema_", f"{label} {len(shapes)} tensors {values / 1e6:.1f}M", {"tensors": len(shapes),
                "values": values}, make_inputs, sslfast.ema_, reference.ema_, bytes=lambda mode: 12 * values,
                backend=backend_of("ema_"), modes=("fwd",), cost=values / 1e6,
                model_note="ema: GB/s against 12 bytes per fp32 value (read both, write the target)")


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    if ctx.sizes == "tiny":
        return [ema_case([(4, 3), (7,), (2, 2, 2)], "tiny")]
    return [ema_case(_resnet18_shapes(), "resnet18")]
