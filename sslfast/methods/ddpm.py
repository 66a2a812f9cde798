"""DDPM (Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models"; reference:
hojonathanho/diffusion and diffusers ``DDPMScheduler``) trained with the min-SNR-gamma weighting
(Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", gamma = 5),
sampled with DDPM ancestral steps or DDIM (Song, Meng, Ermon 2021) through
``sslfast.nn.DiffusionSampler``.

T = 1000 steps, linear betas 1e-4 .. 0.02 (the paper's schedule), epsilon prediction; each
training step draws t uniformly, noises the batch inside the fused ``q_sample`` kernel and
applies the min-SNR-weighted MSE (``sslfast.nn.DiffusionLoss``).
"""

from __future__ import annotations

import torch
from torch import nn

from sslfast.diffusion import NoiseSchedule
from sslfast.nn import DiffusionLoss, DiffusionSampler

from ._common import positive, positive_int

__all__ = ["DDPM"]


class DDPM(nn.Module):
    def __init__(self, model: nn.Module, *, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02, prediction_type: str = "epsilon",
                 snr_gamma: float | None = 5.0):
        super().__init__()
        self.model = model
        self.schedule = NoiseSchedule(positive_int("num_train_timesteps", num_train_timesteps), beta_schedule,
                                      beta_start, beta_end)
        self.snr_gamma = None if snr_gamma is None else positive("snr_gamma", snr_gamma)
        self.prediction_type = prediction_type
        self.loss_fn = DiffusionLoss(self.schedule, prediction_type, self.snr_gamma)

    def _schedule_on(self, device):
        if self.schedule.device != torch.device(device):
            self.schedule = self.schedule.to(device)
            self.loss_fn = DiffusionLoss(self.schedule, self.prediction_type, self.snr_gamma)

    def forward(self, batch, *, generator=None):
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._schedule_on(x0.device)
        return self.loss_fn(self.model, x0, generator=generator)

    @torch.no_grad()
    def sample(self, num_samples: int, shape=(2,), *, sampler: str = "ddim", num_inference_steps: int = 50,
               generator=None, device=None, progress: bool = False):
        """``num_samples`` draws from the model: DDIM (eta 0) or DDPM ancestral steps over
        ``num_inference_steps`` ("leading" timesteps, no clipping: data need not lie in [-1, 1])."""
        device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self._schedule_on(device)
        noise = torch.randn((positive_int("num_samples", num_samples),) + tuple(shape), generator=generator,
                            device=device)
        run = DiffusionSampler(self.schedule, sampler, positive_int("num_inference_steps", num_inference_steps),
                               prediction_type=self.prediction_type)
        return run(self.model, noise, generator=generator, progress=progress)

    def embed(self, x, t=None):
        """The denoiser's hidden features of ``x`` at timestep ``t`` (default 0), when the model
        exposes ``features(x, t)`` (``backbones.MLPDenoiser`` does)."""
        if not hasattr(self.model, "features"):
            raise TypeError(f"embed needs a model with features(x, t); {type(self.model).__name__} has none")
        t = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if t is None else t
        return self.model.features(x, t)
