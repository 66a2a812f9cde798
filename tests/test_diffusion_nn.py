"""sslfast.nn.DiffusionLoss and DiffusionSampler: the training objective and whole sampling loops
vs loops written here the way diffusers' pipelines drive their schedulers (set_timesteps,
init_noise_sigma, scale_model_input, step), on the float64 reference steps."""

import numpy as np
import pytest
import torch

import sslfast
from sslfast import diffusion as D
from sslfast.nn import DiffusionLoss, DiffusionSampler
from sslfast.reference import diffusion as reference

from helpers import DEVICE, randn, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "q_sample")
STEPS = 12


def toy_model(x, t):
    """Nonlinear in x and t, so every wiring mistake (timestep, input scaling) changes the result."""
    return 0.6 * torch.tanh(x) + 0.3 * torch.sin(x * (1.0 + t.double() / 1000.0)).to(x.dtype)


def guided_toy_model(x, t):
    return toy_model(x, t) - 0.2, toy_model(x, t) + 0.1 * x


def diffusers_loop(kind, schedule, noise, model, guidance_scale=1.0, prediction_type="epsilon", generator=None):
    """What diffusers' pipelines do, on sslfast.reference's step functions (diffusers formulas).
    DDPM's step noise: sslfast's documented stream (a Philox key drawn from ``generator`` per step)."""
    total = schedule.num_train_timesteps

    def predict(x, t):
        out = model(x, t)
        if guidance_scale == 1.0:
            return out
        return reference.guided(out[1], out[0], guidance_scale)

    if kind in ("ddim", "ddpm"):
        ratio = total // STEPS
        timesteps = torch.from_numpy((np.arange(0, STEPS) * ratio)[::-1].copy()).to(DEVICE)
        x = noise
        for t in timesteps:
            m = predict(x, t)
            if kind == "ddim":
                x, _ = reference.ddim_step(m, t, x, schedule, t - ratio, prediction_type=prediction_type)
            else:
                key = int(torch.randint(0, 2 ** 62, (), generator=generator))
                x, _ = reference.ddpm_step(m, t, x, schedule, t - ratio, noise=D.philox_normal_like(x, key),
                                           prediction_type=prediction_type, clip_sample=False)
        return x
    ac = schedule.alphas_cumprod.cpu().numpy()
    base = ((1 - ac) / ac) ** 0.5
    if kind == "euler":  # EulerDiscreteScheduler, timestep_spacing="linspace"
        timesteps = np.linspace(0, total - 1, STEPS, dtype=np.float32)[::-1].copy()
    else:  # DPMSolverMultistepScheduler, timestep_spacing="linspace", final_sigmas_type="zero"
        timesteps = np.linspace(0, total - 1, STEPS + 1).round()[::-1][:-1].copy().astype(np.int64)
    sigmas = np.concatenate([np.interp(timesteps, np.arange(total), base), [0.0]])
    sigmas = torch.from_numpy(sigmas).to(DEVICE)
    timesteps = torch.from_numpy(timesteps).to(DEVICE)
    if kind == "euler":
        x = noise * sigmas.max()  # init_noise_sigma for "linspace"
        for i, t in enumerate(timesteps):
            m = predict(reference.euler_scale_model_input(x, sigmas[i]), t)
            x, _ = reference.euler_step(m, x, sigmas[i], sigmas[i + 1], prediction_type=prediction_type)
        return x
    x, prev_x0 = noise, None
    for i, t in enumerate(timesteps):
        m = predict(x, t)
        order2 = prev_x0 is not None and i < STEPS - 1  # first order first and last (lower_order_final)
        x, x0 = reference.dpmpp_2m_step(m, x, sigmas[i], sigmas[i + 1], prev_x0 if order2 else None,
                                        sigmas[i - 1] if order2 else None, prediction_type=prediction_type)
        prev_x0 = x0
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["ddim", "ddpm", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_sampler_matches_a_diffusers_style_loop(backend, kind, guidance_scale):
    schedule = D.NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012, device=DEVICE)
    noise = randn(2, 3, 5, 4, seed=1)
    model = toy_model if guidance_scale == 1.0 else guided_toy_model
    want = diffusers_loop(kind, schedule, noise, model, guidance_scale, generator=torch.Generator().manual_seed(5))
    sampler = DiffusionSampler(schedule, kind, STEPS, guidance_scale=guidance_scale)
    with sslfast.use_backend(backend):
        got = sampler(model, noise, generator=torch.Generator().manual_seed(5))
    # Float64 throughout, but DDPM's Philox normals are float32 (Box-Muller with each backend's
    # float32 log / sin / cos), so they agree to float32 rounding only.
    tol = 1e-5 if kind == "ddpm" else 1e-9
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    assert schedule.num_inference_steps is None  # the caller's schedule is untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddpm_sampler_is_seeded(backend):
    schedule = D.NoiseSchedule(1000, device=DEVICE)
    noise = randn(2, 3, 4, 4, seed=2, dtype=torch.float32)
    sampler = DiffusionSampler(schedule, "ddpm", 5)
    with sslfast.use_backend(backend):
        a = sampler(toy_model, noise, generator=torch.Generator().manual_seed(7))
        b = sampler(toy_model, noise, generator=torch.Generator().manual_seed(7))
        c = sampler(toy_model, noise, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_module_matches_the_functional_path(backend, prediction_type):
    schedule = D.NoiseSchedule(1000, device=DEVICE)
    x0 = randn(3, 2, 4, 4, seed=3, dtype=torch.float32)
    weight = torch.nn.Parameter(torch.tensor(0.5, device=DEVICE))

    def model(x_t, t):
        return weight * x_t

    loss_fn = DiffusionLoss(schedule, prediction_type=prediction_type, snr_gamma=5.0)
    t = torch.tensor([3, 400, 998], device=DEVICE)
    with sslfast.use_backend(backend):
        got = loss_fn(model, x0, t, generator=torch.Generator().manual_seed(11))
        x_t, target = D.q_sample(x0, t, schedule, generator=torch.Generator().manual_seed(11),
                                 target=prediction_type)
        want = D.diffusion_loss(model(x_t, t), target, t, schedule, prediction_type=prediction_type,
                                snr_gamma=5.0)
    torch.testing.assert_close(got, want)
    got.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)
    with sslfast.use_backend(backend):  # t drawn inside: in range, reproducible
        a = loss_fn(model, x0, generator=torch.Generator().manual_seed(12))
        b = loss_fn(model, x0, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)


def test_bad_arguments_name_themselves():
    schedule = D.NoiseSchedule(100)
    with pytest.raises(ValueError, match="sampler"):
        DiffusionSampler(schedule, "heun")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffusionSampler(schedule, "ddim", 0)
    with pytest.raises(TypeError, match="schedule"):
        DiffusionLoss("linear")
    with pytest.raises(ValueError, match="uncond, cond"):
        DiffusionSampler(schedule, "ddim", 3, guidance_scale=2.0)(toy_model, torch.randn(1, 2))
