"""Fakes of the diffusion ops (kernels: csrc/cpu/diffusion.cpp, sslfast/triton/diffusion.py)."""

from __future__ import annotations


from .common import acc_dtype, empty


def fakes(widen: bool) -> dict:
    def q_sample(x0, noise, table, t, seed, generator, v_target):
        return empty(x0), empty(x0)

    def q_sample_bwd(grad_x_t, grad_target, table, t, v_target):
        return empty(grad_x_t if grad_x_t is not None else grad_target)

    def loss(model_output, target, weights, t, reduction):
        shape = (model_output.shape[0],) if reduction == 0 else ()
        return model_output.new_empty(shape, dtype=acc_dtype(model_output))

    def step(sample, *args):
        write_x0 = args[-1]
        return empty(sample), empty(sample) if write_x0 else sample.new_empty((0,))

    return {
        "q_sample": q_sample,
        "diffusion_loss": loss,
        "q_sample_fwd": q_sample,
        "q_sample_bwd": q_sample_bwd,
        "diffusion_loss_fwd": loss,
        "diffusion_loss_bwd": lambda grad, model_output, target, weights, t, reduction: empty(model_output),
        "diffusion_step": step,
        "diffusion_sigma_step": step,
    }
