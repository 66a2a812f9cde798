"""Eager definitions of the diffusion ops, written after diffusers' schedulers (DDPMScheduler,
DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler ``step()``): the spec every
backend is tested against.

Schedule-derived scalars are gathered from the schedule's float64 tables with device-tensor
timesteps (scalar or per-sample [B]) and broadcast over the non-batch dimensions, so nothing
here syncs with the host. Arithmetic runs in the input dtype, like diffusers.
"""

from __future__ import annotations

import functools

import torch

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def lookup(table, t):
    """table[t] for a scalar or [B] timestep tensor. A 0-D index would be an integer index, read
    on the host (.item(): a device sync, a graph break): index with a 1-D view instead."""
    t = torch.as_tensor(t)
    return table[t.reshape(-1)].reshape(t.shape)


def per_sample(values, like):
    """[B] or scalar table values -> shape [B, 1, ...] (or []) in the dtype/device of ``like``."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.dim() == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def _half_in_fp32(fn):
    """Half inputs compute in float32 and come back in their dtype (the kernels' contract; in
    bf16 the schedule scalars themselves round badly, e.g. 1 - alphas_cumprod[0] -> 0)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        half = [a.dtype for a in list(args) + list(kwargs.values())
                if torch.is_tensor(a) and a.dtype in (torch.float16, torch.bfloat16)]
        if not half:
            return fn(*args, **kwargs)
        up = lambda a: a.float() if torch.is_tensor(a) and a.dtype == half[0] else a  # noqa: E731
        out = fn(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
        return tuple(o.to(half[0]) for o in out)

    return wrapper


def guided(model_output, uncond, guidance_scale, guidance_rescale=0.0):
    """Classifier-free guidance as diffusers pipelines: uncond + g (cond - uncond), optionally
    rescaled towards the std of cond (``rescale_noise_cfg``, per sample over non-batch dims)."""
    if uncond is None:
        return model_output
    out = uncond + guidance_scale * (model_output - uncond)
    if guidance_rescale:
        dims = list(range(1, model_output.dim()))
        std_text = model_output.std(dim=dims, keepdim=True)
        std_cfg = out.std(dim=dims, keepdim=True)
        rescaled = out * (std_text / std_cfg)
        out = guidance_rescale * rescaled + (1 - guidance_rescale) * out
    return out


@_half_in_fp32
def q_sample(x0, t, schedule, noise, *, target="epsilon"):
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps; target eps, x0, or v = sqrt(ab) eps - sqrt(1 - ab) x0."""
    a = per_sample(lookup(schedule.sqrt_alphas_cumprod, t), x0)
    s = per_sample(lookup(schedule.sqrt_one_minus_alphas_cumprod, t), x0)
    x_t = a * x0 + s * noise
    if target == "epsilon":
        return x_t, noise
    if target == "sample":
        return x_t, x0
    return x_t, a * noise - s * x0


def snr_weights(t, schedule, prediction_type, snr_gamma):
    """Min-SNR-gamma (Hang et al.; diffusers train_text_to_image): min(snr, g) / snr for epsilon,
    min(snr, g) / (snr + 1) for v_prediction, min(snr, g) for sample; all ones without gamma."""
    snr = lookup(schedule.snr, t)
    if snr_gamma is None:
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=float(snr_gamma))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped


def diffusion_loss(model_output, target, t, schedule, *, prediction_type="epsilon", snr_gamma=None,
                   reduction="mean"):
    """Per-sample mean squared error times the min-SNR weight; mean / sum over samples or none."""
    mse = (model_output.float() - target.float()) ** 2 if model_output.dtype != torch.float64 \
        else (model_output - target) ** 2
    per = mse.reshape(mse.shape[0], -1).mean(dim=1)
    weights = snr_weights(t, schedule, prediction_type, snr_gamma)
    per = per * weights.to(per.dtype).expand(per.shape[0])
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


def _x0_and_eps(model_output, sample, alpha_prod_t, prediction_type):
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        x0 = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
        eps = model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_prod_t ** 0.5 * x0) / beta_prod_t ** 0.5
    else:
        x0 = alpha_prod_t ** 0.5 * sample - beta_prod_t ** 0.5 * model_output
        eps = alpha_prod_t ** 0.5 * model_output + beta_prod_t ** 0.5 * sample
    return x0, eps


def _alpha_prev(schedule, prev_t, final_alpha_cumprod):
    prev = torch.as_tensor(prev_t)
    table = schedule.alphas_cumprod
    gathered = lookup(table, prev.clamp(min=0))
    return torch.where(prev >= 0, gathered, torch.full_like(gathered, final_alpha_cumprod))


@_half_in_fp32
def ddim_step(model_output, t, sample, schedule, prev_t, *, eta=0.0, noise=None, prediction_type="epsilon",
              clip_sample=False, clip_sample_range=1.0, use_clipped_model_output=False, uncond=None,
              guidance_scale=1.0, guidance_rescale=0.0, final_alpha_cumprod=1.0):
    """DDIMScheduler.step (diffusers), with ``prev_t`` = t - num_train_timesteps // num_inference_steps."""
    model_output = guided(model_output, uncond, guidance_scale, guidance_rescale)
    a_t = per_sample(lookup(schedule.alphas_cumprod, t), sample)
    a_prev = per_sample(_alpha_prev(schedule, prev_t, final_alpha_cumprod), sample)
    beta_t = 1 - a_t
    x0, eps = _x0_and_eps(model_output, sample, a_t, prediction_type)
    if clip_sample:
        x0 = x0.clamp(-clip_sample_range, clip_sample_range)
    variance = (1 - a_prev) / beta_t * (1 - a_t / a_prev)
    std_dev_t = eta * variance ** 0.5
    if use_clipped_model_output:
        eps = (sample - a_t ** 0.5 * x0) / beta_t ** 0.5
    direction = (1 - a_prev - std_dev_t ** 2) ** 0.5 * eps
    prev_sample = a_prev ** 0.5 * x0 + direction
    if eta > 0:
        prev_sample = prev_sample + std_dev_t * noise
    return prev_sample, x0


@_half_in_fp32
def ddpm_step(model_output, t, sample, schedule, prev_t, *, noise=None, prediction_type="epsilon",
              variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0, uncond=None,
              guidance_scale=1.0, guidance_rescale=0.0):
    """DDPMScheduler.step (diffusers): posterior mean of q(x_{t-1} | x_t, x0) + sigma_t noise (t > 0)."""
    model_output = guided(model_output, uncond, guidance_scale, guidance_rescale)
    a_t = per_sample(lookup(schedule.alphas_cumprod, t), sample)
    a_prev = per_sample(_alpha_prev(schedule, prev_t, 1.0), sample)
    beta_t, beta_prev = 1 - a_t, 1 - a_prev
    current_alpha_t = a_t / a_prev
    current_beta_t = 1 - current_alpha_t
    x0, _ = _x0_and_eps(model_output, sample, a_t, prediction_type)
    if clip_sample:
        x0 = x0.clamp(-clip_sample_range, clip_sample_range)
    x0_coeff = a_prev ** 0.5 * current_beta_t / beta_t
    sample_coeff = current_alpha_t ** 0.5 * beta_prev / beta_t
    prev_sample = x0_coeff * x0 + sample_coeff * sample
    if variance_type == "fixed_small":
        variance = torch.clamp(beta_prev / beta_t * current_beta_t, min=1e-20)
    else:  # fixed_large
        variance = current_beta_t
    noisy = per_sample((torch.as_tensor(t) > 0).double(), sample)  # no noise at t = 0
    if noise is not None:
        prev_sample = prev_sample + noisy * variance ** 0.5 * noise
    return prev_sample, x0


def euler_scale_model_input(sample, sigma):
    """EulerDiscreteScheduler.scale_model_input: sample / sqrt(sigma^2 + 1)."""
    sigma = per_sample(torch.as_tensor(sigma), sample)
    return sample / (sigma ** 2 + 1) ** 0.5


@_half_in_fp32
def euler_step(model_output, sample, sigma, sigma_next, *, prediction_type="epsilon", uncond=None,
               guidance_scale=1.0, guidance_rescale=0.0):
    """EulerDiscreteScheduler.step (diffusers, s_churn = 0): x + (x - x0) / sigma * (sigma_next - sigma)."""
    model_output = guided(model_output, uncond, guidance_scale, guidance_rescale)
    sigma = per_sample(torch.as_tensor(sigma), sample)
    sigma_next = per_sample(torch.as_tensor(sigma_next), sample)
    if prediction_type == "epsilon":
        x0 = sample - sigma * model_output
    elif prediction_type == "v_prediction":
        x0 = model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + sample / (sigma ** 2 + 1)
    else:
        x0 = model_output
    derivative = (sample - x0) / sigma
    return sample + derivative * (sigma_next - sigma), x0


def _alpha_sigma(sigma):
    alpha_t = 1 / (sigma ** 2 + 1) ** 0.5
    return alpha_t, sigma * alpha_t


@_half_in_fp32
def dpmpp_2m_step(model_output, sample, sigma, sigma_next, prev_x0=None, sigma_prev=None, *,
                  prediction_type="epsilon", uncond=None, guidance_scale=1.0, guidance_rescale=0.0):
    """DPMSolverMultistepScheduler.step (diffusers, dpmsolver++, order 2, midpoint): first order
    without ``prev_x0``; returns (prev_sample, x0_pred), x0_pred being the next call's ``prev_x0``."""
    model_output = guided(model_output, uncond, guidance_scale, guidance_rescale)
    sigma_s0 = per_sample(torch.as_tensor(sigma), sample)
    sigma_t = per_sample(torch.as_tensor(sigma_next), sample)
    alpha_s0, s_s0 = _alpha_sigma(sigma_s0)
    alpha_t, s_t = _alpha_sigma(sigma_t)
    if prediction_type == "epsilon":
        x0 = (sample - s_s0 * model_output) / alpha_s0
    elif prediction_type == "v_prediction":
        x0 = alpha_s0 * sample - s_s0 * model_output
    else:
        x0 = model_output
    lambda_t = torch.log(alpha_t) - torch.log(s_t)
    lambda_s0 = torch.log(alpha_s0) - torch.log(s_s0)
    h = lambda_t - lambda_s0
    if prev_x0 is None:
        prev_sample = (s_t / s_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0
        return prev_sample, x0
    sigma_s1 = per_sample(torch.as_tensor(sigma_prev), sample)
    alpha_s1, s_s1 = _alpha_sigma(sigma_s1)
    lambda_s1 = torch.log(alpha_s1) - torch.log(s_s1)
    r0 = (lambda_s0 - lambda_s1) / h
    d0, d1 = x0, (1.0 / r0) * (x0 - prev_x0)
    prev_sample = ((s_t / s_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * d0
                   - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1)
    return prev_sample, x0


# Kept out of torch.compile graphs (a graph break runs it eagerly): inductor's pointwise lowering
# inlines the ten rounds, each reading its state several times, and did not finish in ten minutes
# (benchmarks/NOTES.md, "Engine core v2: per-call cost").
@torch.compiler.disable
def philox_normal_like(x, seed):
    """The in-kernel noise stream as a tensor (for the reference backend and for tests)."""
    n = x.numel()
    q = (n + 3) // 4
    g = torch.arange(q, dtype=torch.int64)
    key = torch.tensor([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=torch.int64)
    c0, c1 = g & 0xFFFFFFFF, (g >> 32) & 0xFFFFFFFF
    c2 = torch.zeros_like(g)
    c3 = torch.zeros_like(g)
    k0 = key[0].expand(q).clone()
    k1 = key[1].expand(q).clone()
    mask = 0xFFFFFFFF

    def mulhilo(a, b):  # 32 x 32 -> (hi, lo) without int64 overflow: a split in 16-bit halves
        low_part, high_part = (a & 0xFFFF) * b, (a >> 16) * b
        mid = high_part + (low_part >> 16)
        return mid >> 16, ((mid & 0xFFFF) << 16) | (low_part & 0xFFFF)

    for _ in range(10):
        hi_b, lo_b = mulhilo(torch.full_like(c2, 0xCD9E8D57), c2)
        hi_a, lo_a = mulhilo(torch.full_like(c0, 0xD2511F53), c0)
        c0, c2 = hi_b ^ c1 ^ k0, hi_a ^ c3 ^ k1
        c1, c3 = lo_b, lo_a
        k0 = (k0 + 0x9E3779B9) & mask
        k1 = (k1 + 0xBB67AE85) & mask

    def uniform(c):
        s = torch.where(c >= 2 ** 31, c - 2 ** 32, c)
        s = torch.where(s < 0, -s - 1, s)
        return s.to(torch.float32) * 4.6566127342e-10

    outs = []
    for a, b in ((c0, c1), (c2, c3)):
        u1 = torch.clamp(uniform(a), min=1.0e-7)
        u2 = uniform(b)
        r = torch.sqrt(-2.0 * torch.log(u1))
        theta = 6.283185307179586 * u2
        outs += [r * torch.cos(theta), r * torch.sin(theta)]
    flat = torch.cat(outs)[:n]
    return flat.reshape(x.shape).to(device=x.device, dtype=x.dtype)
