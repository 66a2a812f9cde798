"""``sslfast.diffusion``: fused diffusion noise steps (diffusers semantics).

    from sslfast.diffusion import NoiseSchedule, q_sample, diffusion_loss, ddim_step
    schedule = NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012, device="cuda")
    x_t, eps = q_sample(x0, t, schedule, generator=g)          # noise drawn in the kernel
    loss = diffusion_loss(model(x_t, t), eps, t, schedule, prediction_type="epsilon", snr_gamma=5.0)
"""

from .ops.diffusion import (NoiseSchedule, ddim_step, ddpm_step, diffusion_loss, dpmpp_2m_step,
                            euler_scale_model_input, euler_step, q_sample)
from .reference.diffusion import philox_normal_like
from .schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

__all__ = ["NoiseSchedule", "q_sample", "diffusion_loss", "ddim_step", "ddpm_step", "euler_step",
           "euler_scale_model_input", "dpmpp_2m_step", "philox_normal_like",
           "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"]
