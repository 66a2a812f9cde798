"""Schemas, fake kernels and autograd of the diffusion core ops.

Both backends (``sslfast::`` from the C++ extension, ``sslfast_triton::`` from
``sslfast/triton/diffusion.py``) register the same schemas and get the same fakes + autograd
from here.

Core-op contract (the public functions in ``sslfast/ops/diffusion.py`` build the inputs):
  * data tensors are contiguous [B, ...] of one dtype; ``coefs`` is a contiguous [B, K] table of
    per-sample coefficients in that dtype (K = 2 for q_sample, 10 for the step);
  * ``seed`` >= 0 with ``noise`` None draws the noise in the kernel (Philox4x32-10, the stream
    described in csrc/cpu/diffusion.cpp); seed < 0 and no noise means no noise term;
  * ``diffusion_loss_fwd`` returns the weighted per-sample MSE [B]; its backward is
    ``diffusion_loss_bwd`` (gradient to model_output; target gets its negative).
  * ``diffusion_sigma_coefs`` builds the [B, 10] step table of Euler / DPM-Solver++ 2M from
    scalar or [B] sigma tensors (float64 math in the kernel; no autograd: sampling only);
  * ``diffusion_q_sample`` is linear in x0: its backward (gradient to x0 only; the noise is
    data) is ``diffusion_q_sample`` again with other coefficients.
"""

from __future__ import annotations

import torch

from . import _registry

SCHEMAS = {
    "diffusion_q_sample": "(Tensor x0, Tensor? noise, Tensor coefs, int seed, bool v_target) -> (Tensor, Tensor)",
    "diffusion_loss_fwd": "(Tensor model_output, Tensor target, Tensor weight) -> Tensor",
    "diffusion_loss_bwd": "(Tensor grad_per_sample, Tensor model_output, Tensor target, Tensor weight) -> Tensor",
    "diffusion_step": "(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? prev_x0, Tensor? noise, "
                      "Tensor coefs, float guidance_scale, bool clip, float clip_range, int seed, bool write_x0) "
                      "-> (Tensor, Tensor)",
    "diffusion_sigma_coefs": "(Tensor sigma, Tensor sigma_next, Tensor? sigma_prev, int batch, str solver, "
                             "str prediction_type, ScalarType dtype) -> Tensor",
}

STEP_COEFS = 10


def _fakes():
    return {
        "diffusion_q_sample": lambda x0, noise, coefs, seed, v_target: (
            torch.empty_like(x0), torch.empty_like(x0)),
        "diffusion_loss_fwd": lambda m, t, w: m.new_empty((m.shape[0],)),
        "diffusion_loss_bwd": lambda g, m, t, w: torch.empty_like(m),
        "diffusion_step": lambda x, m, u, p, noise, coefs, g, clip, r, seed, write_x0: (
            torch.empty_like(x), torch.empty_like(x) if write_x0 else x.new_empty((0,))),
        "diffusion_sigma_coefs": lambda sigma, sigma_next, sigma_prev, batch, solver, prediction_type, dtype: (
            sigma.new_empty((batch, STEP_COEFS), dtype=dtype)),
    }


def _autograd(ops):
    def loss_setup(ctx, inputs, output):
        model_output, target, weight = inputs
        ctx.save_for_backward(model_output, target, weight)

    def loss_backward(ctx, grad_per_sample):
        model_output, target, weight = ctx.saved_tensors
        grad = ops.diffusion_loss_bwd(grad_per_sample.contiguous(), model_output, target, weight)
        grad_target = -grad if ctx.needs_input_grad[1] else None
        return grad, grad_target, None

    def q_sample_setup(ctx, inputs, output):
        x0, noise, coefs, seed, v_target = inputs
        ctx.save_for_backward(coefs)
        ctx.v_target = v_target

    def q_sample_backward(ctx, grad_x_t, grad_target):
        # d/dx0 of (a x0 + s eps, target): a g_xt, plus -s g_target for v = a eps - s x0. The
        # backward is q_sample itself with coefficients (a, -s) and g_target in the noise slot.
        (coefs,) = ctx.saved_tensors
        if grad_x_t is None and grad_target is None:
            return None, None, None, None, None
        grad_x_t = torch.zeros_like(grad_target) if grad_x_t is None else grad_x_t
        if ctx.v_target and grad_target is not None:
            back = torch.stack([coefs[:, 0], -coefs[:, 1]], dim=1).contiguous()
            second = grad_target.contiguous()
        else:
            back = torch.stack([coefs[:, 0], torch.zeros_like(coefs[:, 1])], dim=1).contiguous()
            second = grad_x_t.contiguous()
        grad_x0, _ = ops.diffusion_q_sample(grad_x_t.contiguous(), second, back, -1, False)
        return grad_x0, None, None, None, None

    return {"diffusion_loss_fwd": (loss_setup, loss_backward),
            "diffusion_q_sample": (q_sample_setup, q_sample_backward)}


def register_fakes_and_autograd(namespace: str) -> None:
    """Register fake kernels for every op and autograd for every forward op of ``namespace``."""
    _registry.register_fakes_and_autograd(namespace, _fakes(), _autograd)
