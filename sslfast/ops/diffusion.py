"""Fused diffusion noise steps: NoiseSchedule, q_sample, diffusion_loss, DDPM / DDIM / Euler /
DPM-Solver++ 2M sampler steps (diffusers semantics, ``sslfast.reference.diffusion``).

Each function checks its arguments and makes one call of a registered op that makes a single
pass over the data. Per-timestep coefficient tables ([T, K], built once per schedule, options
and dtype) go to the kernel with the device-tensor timesteps, which it gathers itself: no
``.item()``, no host sync, no per-call table math. Euler and DPM-Solver++ compute their
coefficients from the sigma tensors inside the kernel. Noise is drawn in the kernel (Philox),
keyed by ``seed`` or by a key the kernel draws from ``generator`` on the data's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _dispatch
from ..reference import diffusion as reference
from . import _validate as check

__all__ = ["NoiseSchedule", "q_sample", "diffusion_loss", "ddim_step", "ddpm_step", "euler_step",
           "euler_scale_model_input", "dpmpp_2m_step"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = reference.PREDICTION_TYPES
TARGETS = ("epsilon", "sample", "v_prediction")
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


# ------------------------------------------------------------------------------------ schedule


class NoiseSchedule:
    """Beta schedule and its derived tables, built in float64 (diffusers DDPMScheduler formulas).

    Tables (device tensors, float64, length ``num_train_timesteps``): ``betas``, ``alphas``,
    ``alphas_cumprod``, ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``snr``,
    ``sigmas`` (Euler / DPM-Solver: sqrt((1 - ab) / ab)).
    """

    def __init__(self, num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 device=None):
        n = check.integer("num_train_timesteps", num_train_timesteps, 1)
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        if beta_schedule == "squaredcos_cap_v2":  # betas_for_alpha_bar(cosine), max_beta = 0.999
            def alpha_bar(s):
                return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                                 dtype=torch.float64)
        else:
            for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
                value = check.real(name, value)
                if not 0 < value < 1:
                    raise ValueError(f"{name} must be in (0, 1): a beta is the noise variance added in one step, "
                                     f"got {value}")
            if beta_schedule == "linear":
                betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
            else:
                betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
        self.num_train_timesteps = n
        self.beta_schedule = beta_schedule
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_inference_steps = None
        self.timesteps = None
        self._derive()
        self.to(device if device is not None else "cpu")

    def _derive(self):
        ac = self.alphas_cumprod
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ac).sqrt()
        self.snr = ac / (1.0 - ac)
        self.sigmas = ((1.0 - ac) / ac).sqrt()

    _TABLES = ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
               "snr", "sigmas")

    @property
    def device(self):
        return self.betas.device

    def to(self, device):
        for name in self._TABLES:
            setattr(self, name, getattr(self, name).to(device))
        if self.timesteps is not None:
            self.timesteps = self.timesteps.to(device)
        self._coef_cache = {}
        return self

    @property
    def step_ratio(self):
        """num_train_timesteps // num_inference_steps: the prev-timestep stride of DDPM / DDIM."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) first (or pass prev_t)")
        return self.num_train_timesteps // self.num_inference_steps

    def set_timesteps(self, num_inference_steps, spacing="leading", steps_offset=0):
        """Inference timesteps as DDPMScheduler / DDIMScheduler.set_timesteps; int64 on the device."""
        n, total = num_inference_steps, self.num_train_timesteps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
            raise ValueError(f"num_inference_steps must be an int in [1, {total}], got {n!r}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if spacing == "linspace":
            steps = np.linspace(0, total - 1, n).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            steps = (np.arange(0, n) * (total // n)).round()[::-1].copy().astype(np.int64) + steps_offset
        else:
            steps = np.round(np.arange(total, 0, -total / n)).astype(np.int64) - 1
        self.num_inference_steps = n
        self.timesteps = torch.from_numpy(steps).to(self.device)
        return self.timesteps

    def sigmas_for(self, timesteps):
        """Euler / DPM-Solver sigmas at (possibly fractional) timesteps, np.interp-style, with the
        final 0 appended: the ``sigmas`` of EulerDiscreteScheduler.set_timesteps."""
        t = torch.as_tensor(timesteps, device=self.device).to(torch.float64)
        lo = t.floor().clamp(0, self.num_train_timesteps - 1)
        hi = (lo + 1).clamp(max=self.num_train_timesteps - 1)
        w = t - lo
        s = self.sigmas[lo.long()] * (1 - w) + self.sigmas[hi.long()] * w
        return torch.cat([s, s.new_zeros(1)])

    def coefficient_table(self, key, build, dtype):
        """The [T, K] table ``build(all timesteps)`` makes (K columns, each [T] or a float), once
        per (key, dtype): a call then costs one gather in its kernel. Options that change with
        set_timesteps belong in ``key``. Under torch.compile the table math is traced instead."""
        if torch.compiler.is_compiling():
            return _column_table(build(torch.arange(self.num_train_timesteps, device=self.device)),
                                 self.num_train_timesteps, dtype)
        table = self._coef_cache.get((key, dtype))
        if table is None:
            every = torch.arange(self.num_train_timesteps, device=self.device)
            table = self._coef_cache[(key, dtype)] = _column_table(build(every), self.num_train_timesteps, dtype)
        return table


def _column_table(columns, rows, dtype):
    """[rows]-or-scalar float64 columns (tensors or Python floats) -> a contiguous [rows, K] table."""
    device = next(c.device for c in columns if torch.is_tensor(c))
    table = torch.zeros((rows, len(columns)), dtype=torch.float64, device=device)
    for k, c in enumerate(columns):
        if torch.is_tensor(c):
            table[:, k] = c.reshape(-1) if c.dim() else c
        elif c:
            table[:, k] = float(c)
    return table.to(dtype)


# ------------------------------------------------------------------------------------ checks


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _batch_tensor(name, x):
    check.tensor(name, x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be [B, ...] with B >= 1, got shape {tuple(x.shape)}")
    return x


def _like(name, value, ref_name, ref):
    if value is None:
        return None
    check.tensor(name, value)
    if value.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(value.shape)}")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {value.dtype}")
    check.same_device(name, value, ref_name, ref)
    return value


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def _schedule(schedule, like):
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    tables = schedule.betas
    if tables.is_cuda != like.is_cuda or tables.get_device() != like.get_device():
        raise ValueError(f"schedule is on {schedule.device} but the data is on {like.device}: use schedule.to()")
    return schedule


def _timesteps(name, t, like, limit, *, allow_negative=False):
    """Integer timesteps, scalar or per-sample [B] (or [1]), on the data's device. Their values
    are read only by the kernels (range-checked there on CPU) and by the reference backend."""
    if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if isinstance(t, int):
        low = -1 if allow_negative else 0
        if not low <= t < limit:
            raise ValueError(f"{name} must be in [{low}, {limit}), got {t}")
        return torch.tensor(t, device=like.device)
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    batch = like.shape[0]
    if not (t.dim() == 0 or (t.dim() == 1 and t.shape[0] in (1, batch))):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},) to broadcast to the batch, "
                         f"got shape {tuple(t.shape)}")
    check.same_device(name, t, "the data", like)
    if t.is_cuda and not torch.compiler.is_compiling():
        # Checked on the device, asynchronously: the Triton kernels clamp, so a bad t is reported
        # here rather than read out of bounds; no host sync on the hot path.
        low = -1 if allow_negative else 0
        torch._assert_async(((t >= low) & (t < limit)).all(), f"{name} must be in [{low}, {limit})")
    return t


def _check_values(name, t, limit, *, allow_negative=False):
    """The reference backend indexes the tables on the host side of the spec: check first (CPU)."""
    if not t.is_cuda and t.numel() and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(t.reshape(-1)))
        floor = -1 if allow_negative else 0
        if high >= limit or low < floor:
            raise ValueError(f"{name} must be in [{floor}, {limit}), got {high if high >= limit else low}")


def _seed(seed):
    """-1 (draw a key from the generator in the kernel) or the given key."""
    if seed is None:
        return -1
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return seed


def _reference_key(generator, seed):
    """The Philox key for the reference backend: as the kernels draw it (csrc/cpu/diffusion.cpp)."""
    if seed is not None:
        return _seed(seed)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2 ** 62, (), generator=generator, device=device))


# ------------------------------------------------------------------------------------ training


def _q_sample_table(schedule, dtype):
    return schedule.coefficient_table(
        ("q_sample",), lambda t: [reference.lookup(schedule.sqrt_alphas_cumprod, t),
                                  reference.lookup(schedule.sqrt_one_minus_alphas_cumprod, t)], dtype)


def q_sample(x0, t, schedule, noise=None, *, generator=None, seed=None, target="epsilon"):
    """Noise ``x0`` to timestep ``t``: (x_t, target) with x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.

    ``target``: "epsilon" (eps), "sample" (x0 itself) or "v_prediction" (sqrt(ab) eps - sqrt(1 - ab) x0).
    ``noise=None`` draws eps inside the kernel (Philox, key ``seed``, else drawn from ``generator`` /
    the default generator of x0's device): same key, same result, and eps is never read from memory.
    Gradients flow to ``x0`` (e.g. a trainable encoder's latents), not to ``noise``. Under
    ``torch.compile(fullgraph=True)`` pass ``seed`` or no generator (dynamo cannot trace one).
    """
    _batch_tensor("x0", x0)
    _like("noise", noise, "x0", x0)
    _choice("target", target, TARGETS)
    _schedule(schedule, x0)
    t = _timesteps("t", t, x0, schedule.num_train_timesteps)
    generator = check.generator("generator", generator, x0)
    ops = _dispatch.ops_for("q_sample", x0)
    if ops is None:
        _check_values("t", t, schedule.num_train_timesteps)
        if noise is None:
            noise = reference.philox_normal_like(x0, _reference_key(generator, seed))
        return reference.q_sample(x0, t, schedule, noise, target=target)
    x_t, second = ops.q_sample(x0, noise, _q_sample_table(schedule, _acc_dtype(x0)), t, _seed(seed), generator,
                               target == "v_prediction")
    return x_t, (x0 if target == "sample" else second)


def diffusion_loss(model_output, target, t, schedule, *, prediction_type="epsilon", snr_gamma=None,
                   reduction="mean"):
    """Per-sample MSE times the min-SNR-gamma weight (min(snr, g) / snr for epsilon,
    min(snr, g) / (snr + 1) for v_prediction, min(snr, g) for sample; 1 without ``snr_gamma``),
    reduced by ``reduction`` ("mean" | "sum" | "none"). Gradient to model_output (and target).
    Float32 (float64 for float64 inputs) result; fp32 accumulation for half inputs."""
    _batch_tensor("model_output", model_output)
    _like("target", target, "model_output", model_output)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    _choice("reduction", reduction, REDUCTIONS)
    if snr_gamma is not None:
        snr_gamma = check.positive_float("snr_gamma", snr_gamma)
    _schedule(schedule, model_output)
    t = _timesteps("t", t, model_output, schedule.num_train_timesteps)
    ops = _dispatch.ops_for("diffusion_loss", model_output)
    if ops is None:
        _check_values("t", t, schedule.num_train_timesteps)
        return reference.diffusion_loss(model_output, target, t, schedule, prediction_type=prediction_type,
                                        snr_gamma=snr_gamma, reduction=reduction)
    weights = schedule.coefficient_table(
        ("snr_weight", prediction_type, snr_gamma),
        lambda every: [reference.snr_weights(every, schedule, prediction_type, snr_gamma)],
        _acc_dtype(model_output))
    return ops.diffusion_loss(model_output, target, weights.reshape(-1), t, REDUCTIONS[reduction])


# ------------------------------------------------------------------------------------ sampling


def _x0_columns(prediction_type, sqrt_a, sqrt_b):
    """(c0, c1, c2, c3, c4): x0 = c0 x + c1 m; eps = c2 x + c3 m + c4 x0 (before any clip)."""
    if prediction_type == "epsilon":
        return 1 / sqrt_a, -sqrt_b / sqrt_a, 0.0, 1.0, 0.0
    if prediction_type == "sample":
        return 0.0, 1.0, 1 / sqrt_b, -sqrt_a / sqrt_b, 0.0
    return sqrt_a, -sqrt_b, sqrt_b, sqrt_a, 0.0


def _guidance(model_output, uncond, guidance_scale, guidance_rescale):
    """Validates the CFG pair; a rescale needs per-sample stds, so it is applied before the kernel."""
    if uncond is None:
        return model_output, None
    _like("uncond", uncond, "model_output", model_output)
    if guidance_rescale:
        return reference.guided(model_output, uncond, float(guidance_scale), float(guidance_rescale)), None
    return model_output, uncond


def _check_step_inputs(model_output, sample, uncond, noise):
    _batch_tensor("sample", sample)
    _like("model_output", model_output, "sample", sample)
    _like("noise", noise, "sample", sample)
    if torch.is_grad_enabled():
        for name, x in (("model_output", model_output), ("sample", sample)):
            if x.requires_grad:
                raise ValueError(f"{name} requires grad: sampler steps are inference-only (use torch.no_grad())")


def _step_table(schedule, key, build, t, prev_t, sample):
    """(table, t) for the step kernel: the cached per-timestep table for the default prev_t, else
    this call's [B, 10] rows (t = None)."""
    dtype = _acc_dtype(sample)
    if prev_t is None:
        return schedule.coefficient_table(key + (schedule.step_ratio,), build, dtype), t
    columns = build(t, prev_t)
    rows = max(c.numel() for c in columns if torch.is_tensor(c))
    return _column_table(columns, rows, dtype).expand(sample.shape[0], -1).contiguous(), None


def _prev_timesteps(prev_t, t, schedule, sample):
    """None (the default t - step_ratio, cacheable) or the validated explicit ``prev_t``."""
    if prev_t is None:
        schedule.step_ratio  # raises when set_timesteps was not called
        return None
    return _timesteps("prev_t", prev_t, sample, schedule.num_train_timesteps, allow_negative=True)


def _ddim_columns(schedule, t, prev_t, eta, prediction_type, use_clipped_model_output, final_alpha_cumprod):
    a_t = reference.lookup(schedule.alphas_cumprod, t)
    a_prev = reference._alpha_prev(schedule, prev_t, final_alpha_cumprod)
    beta_t = 1 - a_t
    sqrt_a, sqrt_b = a_t.sqrt(), beta_t.sqrt()
    c0, c1, c2, c3, c4 = _x0_columns(prediction_type, sqrt_a, sqrt_b)
    if use_clipped_model_output:
        c2, c3, c4 = 1 / sqrt_b, 0.0, -sqrt_a / sqrt_b
    std = eta * ((1 - a_prev) / beta_t * (1 - a_t / a_prev)).sqrt()
    return [c0, c1, c2, c3, c4, a_prev.sqrt(), (1 - a_prev - std ** 2).sqrt(), 0.0, 0.0, std if eta > 0 else 0.0]


def _ddpm_columns(schedule, t, prev_t, prediction_type, variance_type):
    a_t = reference.lookup(schedule.alphas_cumprod, t)
    a_prev = reference._alpha_prev(schedule, prev_t, 1.0)
    beta_t, beta_prev = 1 - a_t, 1 - a_prev
    current_alpha = a_t / a_prev
    current_beta = 1 - current_alpha
    c0, c1, _, _, _ = _x0_columns(prediction_type, a_t.sqrt(), beta_t.sqrt())
    if variance_type == "fixed_small":
        variance = torch.clamp(beta_prev / beta_t * current_beta, min=1e-20)
    else:
        variance = current_beta
    std = torch.where(torch.as_tensor(t) > 0, variance.sqrt(), torch.zeros_like(variance))
    return [c0, c1, 0.0, 0.0, 0.0, a_prev.sqrt() * current_beta / beta_t, 0.0,
            current_alpha.sqrt() * beta_prev / beta_t, 0.0, std]


def ddim_step(model_output, t, sample, schedule, *, prev_t=None, eta=0.0, noise=None, generator=None, seed=None,
              prediction_type="epsilon", clip_sample=False, clip_sample_range=1.0, use_clipped_model_output=False,
              uncond=None, guidance_scale=1.0, guidance_rescale=0.0, final_alpha_cumprod=1.0, return_x0=True):
    """One DDIMScheduler.step (diffusers) fused: returns (prev_sample, pred_original_sample);
    ``return_x0=False`` skips writing pred_original_sample (None in its place): 1/4 fewer bytes.

    ``t`` / ``prev_t``: device tensors (scalar or per-sample); ``prev_t`` defaults to
    t - num_train_timesteps // num_inference_steps (``schedule.set_timesteps``). With ``eta`` > 0
    the noise is ``noise`` or drawn in the kernel. ``uncond`` + ``guidance_scale``: classifier-free
    guidance (``model_output`` is the conditional prediction)."""
    _check_step_inputs(model_output, sample, uncond, noise)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    eta = check.real("eta", eta)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    _schedule(schedule, sample)
    t = _timesteps("t", t, sample, schedule.num_train_timesteps)
    prev_t = _prev_timesteps(prev_t, t, schedule, sample)
    generator = check.generator("generator", generator, sample)
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    ops = _dispatch.ops_for("diffusion_step", sample)
    if ops is None:
        _check_values("t", t, schedule.num_train_timesteps)
        if eta > 0 and noise is None:
            noise = reference.philox_normal_like(sample, _reference_key(generator, seed))
        prev = t - schedule.step_ratio if prev_t is None else prev_t
        out = reference.ddim_step(model_output, t, sample, schedule, prev, eta=eta, noise=noise,
                                  prediction_type=prediction_type, clip_sample=clip_sample,
                                  clip_sample_range=clip_sample_range,
                                  use_clipped_model_output=use_clipped_model_output, uncond=uncond,
                                  guidance_scale=guidance_scale, final_alpha_cumprod=final_alpha_cumprod)
        return out if return_x0 else (out[0], None)

    def build(t, prev=None):
        return _ddim_columns(schedule, t, t - schedule.step_ratio if prev is None else prev, eta, prediction_type,
                             use_clipped_model_output, final_alpha_cumprod)

    table, t = _step_table(schedule, ("ddim", eta, prediction_type, bool(use_clipped_model_output),
                                      float(final_alpha_cumprod)), build, t, prev_t, sample)
    out, x0 = ops.diffusion_step(sample, model_output, uncond, None, noise if eta > 0 else None, table, t,
                                 float(guidance_scale), bool(clip_sample), float(clip_sample_range), eta > 0,
                                 _seed(seed), generator, bool(return_x0))
    return out, (x0 if return_x0 else None)


def ddpm_step(model_output, t, sample, schedule, *, prev_t=None, noise=None, generator=None, seed=None,
              prediction_type="epsilon", variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
              uncond=None, guidance_scale=1.0, guidance_rescale=0.0, return_x0=True):
    """One DDPMScheduler.step (diffusers) fused: (prev_sample, pred_original_sample). The noise
    (added where t > 0) is ``noise`` or drawn in the kernel. ``return_x0``: as ddim_step."""
    _check_step_inputs(model_output, sample, uncond, noise)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    _choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    _schedule(schedule, sample)
    t = _timesteps("t", t, sample, schedule.num_train_timesteps)
    prev_t = _prev_timesteps(prev_t, t, schedule, sample)
    generator = check.generator("generator", generator, sample)
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    ops = _dispatch.ops_for("diffusion_step", sample)
    if ops is None:
        _check_values("t", t, schedule.num_train_timesteps)
        if noise is None:
            noise = reference.philox_normal_like(sample, _reference_key(generator, seed))
        prev = t - schedule.step_ratio if prev_t is None else prev_t
        out = reference.ddpm_step(model_output, t, sample, schedule, prev, noise=noise,
                                  prediction_type=prediction_type, variance_type=variance_type,
                                  clip_sample=clip_sample, clip_sample_range=clip_sample_range, uncond=uncond,
                                  guidance_scale=guidance_scale)
        return out if return_x0 else (out[0], None)

    def build(t, prev=None):
        return _ddpm_columns(schedule, t, t - schedule.step_ratio if prev is None else prev, prediction_type,
                             variance_type)

    table, t = _step_table(schedule, ("ddpm", prediction_type, variance_type), build, t, prev_t, sample)
    out, x0 = ops.diffusion_step(sample, model_output, uncond, None, noise, table, t, float(guidance_scale),
                                 bool(clip_sample), float(clip_sample_range), True, _seed(seed), generator,
                                 bool(return_x0))
    return out, (x0 if return_x0 else None)


def _sigma(name, value, sample):
    """A scalar or [B] sigma tensor on the sample's device (a Python number becomes one); its
    values (>= 0) are checked by the kernel, or here for the reference backend."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        value = torch.tensor(float(value), dtype=torch.float64, device=sample.device)
    check.tensor(name, value)
    if not (value.dim() == 0 or (value.dim() == 1 and value.shape[0] in (1, sample.shape[0]))):
        raise ValueError(f"{name} must be a scalar or have shape ({sample.shape[0]},), got {tuple(value.shape)}")
    check.same_device(name, value, "sample", sample)
    return value


def _check_sigma_values(*named):
    for name, value in named:
        if value is not None and not value.is_cuda and value.numel() and not torch.compiler.is_compiling():
            low = float(value.min())  # NaN fails the test below
            if not low >= 0:
                raise ValueError(f"{name} must be >= 0, got {low}")


def euler_scale_model_input(sample, sigma):
    """EulerDiscreteScheduler.scale_model_input: sample / sqrt(sigma^2 + 1)."""
    _batch_tensor("sample", sample)
    sigma = _sigma("sigma", sigma, sample)
    _check_sigma_values(("sigma", sigma))
    return reference.euler_scale_model_input(sample, sigma)


def euler_step(model_output, sample, sigma, sigma_next, *, prediction_type="epsilon", uncond=None,
               guidance_scale=1.0, guidance_rescale=0.0, return_x0=True):
    """One EulerDiscreteScheduler.step (diffusers, s_churn = 0) fused: (prev_sample, x0).
    ``sigma`` / ``sigma_next``: device tensors (``schedule.sigmas_for(timesteps)``)."""
    _check_step_inputs(model_output, sample, uncond, None)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    sigma = _sigma("sigma", sigma, sample)
    sigma_next = _sigma("sigma_next", sigma_next, sample)
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    ops = _dispatch.ops_for("diffusion_sigma_step", sample)
    if ops is None:
        _check_sigma_values(("sigma", sigma), ("sigma_next", sigma_next))
        out = reference.euler_step(model_output, sample, sigma, sigma_next, prediction_type=prediction_type,
                                   uncond=uncond, guidance_scale=guidance_scale)
        return out if return_x0 else (out[0], None)
    out, x0 = ops.diffusion_sigma_step(sample, model_output, uncond, None, sigma, sigma_next, None, "euler",
                                       prediction_type, float(guidance_scale), bool(return_x0))
    return out, (x0 if return_x0 else None)


def dpmpp_2m_step(model_output, sample, sigma, sigma_next, prev_x0=None, sigma_prev=None, *,
                  prediction_type="epsilon", uncond=None, guidance_scale=1.0, guidance_rescale=0.0):
    """One DPMSolverMultistepScheduler.step (diffusers: dpmsolver++, order 2, midpoint) fused.

    Returns (prev_sample, x0_pred); pass x0_pred (and this step's ``sigma`` as ``sigma_prev``)
    to the next call. Without ``prev_x0`` the step is first order: the first step, and the last
    one (sigma_next = 0), where diffusers (``final_sigmas_type="zero"``) also drops to first order."""
    _check_step_inputs(model_output, sample, uncond, None)
    _like("prev_x0", prev_x0, "sample", sample)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    sigma = _sigma("sigma", sigma, sample)
    sigma_next = _sigma("sigma_next", sigma_next, sample)
    if prev_x0 is not None:
        if sigma_prev is None:
            raise ValueError("sigma_prev must be given with prev_x0, got None")
        sigma_prev = _sigma("sigma_prev", sigma_prev, sample)
    else:
        sigma_prev = None
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    ops = _dispatch.ops_for("diffusion_sigma_step", sample)
    if ops is None:
        _check_sigma_values(("sigma", sigma), ("sigma_next", sigma_next), ("sigma_prev", sigma_prev))
        return reference.dpmpp_2m_step(model_output, sample, sigma, sigma_next, prev_x0, sigma_prev,
                                       prediction_type=prediction_type, uncond=uncond,
                                       guidance_scale=guidance_scale)
    return ops.diffusion_sigma_step(sample, model_output, uncond, prev_x0, sigma, sigma_next, sigma_prev,
                                    "dpmpp_2m", prediction_type, float(guidance_scale), True)
