"""Diffusion training and sampling built from the fused ops (``sslfast.ops.diffusion``).

``DiffusionLoss``: the DDPM objective in one call (t ~ U[0, T), in-kernel noise, min-SNR).
``DiffusionSampler``: a whole sampling loop (DDIM, DDPM, Euler, DPM-Solver++ 2M) with optional
classifier-free guidance; timesteps stay device tensors, so the loop never syncs with the host.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..ops import _validate as check
from ..ops import diffusion as ops

SAMPLERS = ("ddim", "ddpm", "euler", "dpmpp_2m")


def _schedule(schedule):
    if not isinstance(schedule, ops.NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


class DiffusionLoss(nn.Module):
    """``forward(model, x0, t=None, *, generator=None) -> loss``.

    Draws ``t`` uniformly in [0, num_train_timesteps) per sample unless given, noises ``x0``
    (``q_sample``, noise drawn inside the kernel), calls ``model(x_t, t)`` and returns the
    (min-SNR-weighted) MSE against the target of ``prediction_type``.
    """

    def __init__(self, schedule, prediction_type: str = "epsilon", snr_gamma: float | None = None,
                 reduction: str = "mean"):
        super().__init__()
        self.schedule = _schedule(schedule)
        self.prediction_type = ops._choice("prediction_type", prediction_type, ops.PREDICTION_TYPES)
        self.snr_gamma = snr_gamma
        self.reduction = reduction

    def forward(self, model, x0, t=None, *, generator=None):
        ops._batch_tensor("x0", x0)
        generator = check.generator("generator", generator, x0)
        if t is None:
            device = generator.device if generator is not None else x0.device
            t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), generator=generator,
                              device=device).to(x0.device)
        x_t, target = ops.q_sample(x0, t, self.schedule, generator=generator, target=self.prediction_type)
        return ops.diffusion_loss(model(x_t, t), target, t, self.schedule, prediction_type=self.prediction_type,
                                  snr_gamma=self.snr_gamma, reduction=self.reduction)

    def extra_repr(self):
        return f"prediction_type={self.prediction_type!r}, snr_gamma={self.snr_gamma}"


class DiffusionSampler:
    """``sampler(model, noise, *, generator=None, progress=False) -> x0``: a full sampling loop.

    ``model(x, t)`` returns the prediction (``prediction_type``) for a batch at the device
    timestep ``t`` (a 0-dim tensor: int64, float32 for Euler); with ``guidance_scale != 1`` it returns the pair
    ``(uncond, cond)`` and the guidance is fused into each step. ``noise`` is the initial
    Gaussian draw; it is scaled by the sampler's initial sigma as diffusers does (Euler).
    Timesteps follow diffusers' defaults: DDIM / DDPM ``set_timesteps(n, spacing)`` ("leading"
    unless ``spacing`` says otherwise); Euler as EulerDiscreteScheduler "linspace" (float
    timesteps, interpolated sigmas, initial sigma sigma_max); DPM-Solver++ 2M as
    DPMSolverMultistepScheduler "linspace" (first order on its first and last steps).
    ``clip_sample`` defaults to False (latent diffusion's setting; diffusers' DDPM / DDIM
    scheduler default is True: pass ``clip_sample=True`` for pixel-space models).
    """

    def __init__(self, schedule, sampler: str = "ddim", num_inference_steps: int = 50, *,
                 spacing: str = "leading", prediction_type: str = "epsilon", eta: float = 0.0,
                 clip_sample: bool = False, guidance_scale: float = 1.0, guidance_rescale: float = 0.0):
        # A private copy: set_timesteps (and the step coefficient cache) must not change the
        # caller's schedule, nor another sampler's.
        self.schedule = copy.copy(_schedule(schedule))
        self.schedule._coef_cache = {}
        self.sampler = ops._choice("sampler", sampler, SAMPLERS)
        self.prediction_type = ops._choice("prediction_type", prediction_type, ops.PREDICTION_TYPES)
        # Validates num_inference_steps and spacing; DDIM / DDPM keep these timesteps.
        self.timesteps = self.schedule.set_timesteps(num_inference_steps, spacing)
        total, n = self.schedule.num_train_timesteps, num_inference_steps
        if sampler == "euler":
            steps = np.linspace(0, total - 1, n, dtype=np.float32)[::-1].copy()
            self.timesteps = torch.from_numpy(steps).to(self.schedule.device)
        elif sampler == "dpmpp_2m":
            steps = np.linspace(0, total - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
            self.timesteps = torch.from_numpy(steps).to(self.schedule.device)
        self.sigmas = self.schedule.sigmas_for(self.timesteps)
        self.eta, self.clip_sample = float(eta), bool(clip_sample)
        self.guidance_scale, self.guidance_rescale = float(guidance_scale), float(guidance_rescale)
        self.init_noise_sigma = self.sigmas.max() if sampler == "euler" else 1.0

    def _predict(self, model, x, t):
        out = model(x, t)
        if self.guidance_scale == 1.0:
            return out, {}
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("with guidance_scale != 1 the model must return (uncond, cond), "
                             f"got {type(out).__name__}")
        uncond, cond = out
        return cond, {"uncond": uncond, "guidance_scale": self.guidance_scale,
                      "guidance_rescale": self.guidance_rescale}

    @torch.no_grad()
    def __call__(self, model, noise, *, generator=None, progress: bool = False):
        ops._batch_tensor("noise", noise)
        if self.schedule.device != noise.device:
            raise ValueError(f"schedule is on {self.schedule.device} but noise is on {noise.device}")
        x = noise * self.init_noise_sigma
        steps = range(len(self.timesteps))
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=f"{self.sampler} sampling", leave=False)
        prev_x0 = None
        for i in steps:
            t = self.timesteps[i]
            if self.sampler == "ddim":
                m, guide = self._predict(model, x, t)
                x, _ = ops.ddim_step(m, t, x, self.schedule, eta=self.eta, generator=generator,
                                     prediction_type=self.prediction_type, clip_sample=self.clip_sample,
                                     return_x0=False, **guide)
            elif self.sampler == "ddpm":
                m, guide = self._predict(model, x, t)
                x, _ = ops.ddpm_step(m, t, x, self.schedule, generator=generator,
                                     prediction_type=self.prediction_type, clip_sample=self.clip_sample,
                                     return_x0=False, **guide)
            elif self.sampler == "euler":
                m, guide = self._predict(model, ops.euler_scale_model_input(x, self.sigmas[i]), t)
                x, _ = ops.euler_step(m, x, self.sigmas[i], self.sigmas[i + 1], prediction_type=self.prediction_type,
                                      return_x0=False, **guide)
            else:
                m, guide = self._predict(model, x, t)
                second_order = prev_x0 is not None and i < len(self.timesteps) - 1
                x, x0 = ops.dpmpp_2m_step(m, x, self.sigmas[i], self.sigmas[i + 1],
                                          prev_x0 if second_order else None,
                                          self.sigmas[i - 1] if second_order else None,
                                          prediction_type=self.prediction_type, **guide)
                prev_x0 = x0
        return x
