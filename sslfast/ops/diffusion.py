"""Fused diffusion noise steps: NoiseSchedule, q_sample, diffusion_loss, DDPM / DDIM / Euler /
DPM-Solver++ 2M sampler steps (diffusers semantics, ``sslfast.reference.diffusion``).

Each public function validates, gathers its per-sample coefficients from the schedule's float64
tables with the device-tensor timesteps (a few [B]-sized ops, no ``.item()``, no host sync; Euler
and DPM-Solver++ compute theirs from the sigma tensors in one small op, ``diffusion_sigma_coefs``),
and calls one fused core op that makes a single pass over the data:
``torch.ops.sslfast.*`` (C++) or ``torch.ops.sslfast_triton.*`` (Triton).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _backend, _native
from ..reference import diffusion as reference
from . import _validate as check
from ._diffusion_schema import STEP_COEFS

__all__ = ["NoiseSchedule", "q_sample", "diffusion_loss", "ddim_step", "ddpm_step", "euler_step",
           "euler_scale_model_input", "dpmpp_2m_step"]

_NATIVE_DEVICES = _native.devices(has_cuda_kernel=False)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = reference.PREDICTION_TYPES
TARGETS = ("epsilon", "sample", "v_prediction")


# ------------------------------------------------------------------------------------ schedule


class NoiseSchedule:
    """Beta schedule and its derived tables, built in float64 (diffusers DDPMScheduler formulas).

    Tables (device tensors, float64, length ``num_train_timesteps``): ``betas``, ``alphas``,
    ``alphas_cumprod``, ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``snr``,
    ``sigmas`` (Euler / DPM-Solver: sqrt((1 - ab) / ab)).
    """

    def __init__(self, num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                 device=None):
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) \
                or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be an int >= 1, got {num_train_timesteps!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        n = num_train_timesteps
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
        else:  # betas_for_alpha_bar(alpha_transform_type="cosine"), max_beta = 0.999
            def alpha_bar(s):
                return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                                 dtype=torch.float64)
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
        self._coef_cache = {}
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


# ------------------------------------------------------------------------------------ helpers


def _core_ops(backend):
    return torch.ops.sslfast if backend == "native" else torch.ops.sslfast_triton


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _kernel_input(backend, x):
    if x is None:
        return None
    if backend == "native" and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x.contiguous()


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
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}")
    return value


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _schedule(schedule, like):
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    if schedule.device != like.device:
        raise ValueError(f"schedule is on {schedule.device} but the data is on {like.device}: use schedule.to()")
    return schedule


def _values_checkable(t):
    """Value checks read the tensor: only on CPU and outside torch.compile (no device syncs)."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _timesteps(name, t, batch, device, limit, *, allow_negative=False):
    """Integer timesteps, scalar or per-sample [B] (or [1]), on the data's device, in range."""
    if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if isinstance(t, int):
        t = torch.tensor(t, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if not (t.dim() == 0 or (t.dim() == 1 and t.shape[0] in (1, batch))):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},) to broadcast to the batch, "
                         f"got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the data is on {device}")
    if _values_checkable(t) and t.numel():
        low, high = (int(t), int(t)) if t.dim() == 0 else (int(v) for v in torch.aminmax(t))
        if high >= limit or low < (-1 if allow_negative else 0):
            bad = high if high >= limit else low
            raise ValueError(f"{name} must be in [{-1 if allow_negative else 0}, {limit}), got {bad}")
    elif t.device.type == "cuda" and not torch.compiler.is_compiling():
        # Checked on the device, asynchronously: no host sync in the hot path.
        low = -1 if allow_negative else 0
        torch._assert_async(((t >= low) & (t < limit)).all(), f"{name} must be in [{low}, {limit})")
    return t.long()


def _per_sample_table(columns, batch, dtype):
    """[B]-or-scalar float64 columns (tensors or Python floats) -> a contiguous [B, K] table in
    ``dtype``. One zeros + one copy per non-zero column: these run on every step."""
    device = next(c.device for c in columns if torch.is_tensor(c))
    table = torch.zeros((batch, len(columns)), dtype=torch.float64, device=device)
    for k, c in enumerate(columns):
        if torch.is_tensor(c):
            table[:, k] = c.reshape(-1) if c.dim() else c
        elif c:
            table[:, k] = float(c)
    return table.to(dtype)


def _cached_coefs(schedule, key, build, t, batch, dtype):
    """Rows ``t`` of a [num_train_timesteps, K] coefficient table that ``build(all_timesteps)``
    makes once per (schedule, options, dtype): a sampling step (or q_sample, or the loss weight)
    then costs one gather instead of ~10-30 tiny scalar ops. Built eagerly only; under
    torch.compile the scalar math is traced."""
    if torch.compiler.is_compiling():
        return _per_sample_table(build(t), batch, dtype)
    cache = schedule.__dict__.setdefault("_coef_cache", {})
    table = cache.get((key, dtype))
    if table is None:
        every = torch.arange(schedule.num_train_timesteps, device=schedule.device)
        table = cache[(key, dtype)] = _per_sample_table(build(every), schedule.num_train_timesteps, dtype)
    if t.dim() == 1 and t.shape[0] == batch:
        return table.index_select(0, t)  # contiguous [B, K]; ~2x cheaper than table[t] on CPU
    return table.index_select(0, t.reshape(1)).expand(batch, table.shape[1]).contiguous()


def _seed(generator, seed):
    """A 63-bit Philox key: ``seed`` as given, else drawn from ``generator`` (or the default one)."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        return seed
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2 ** 62, (), generator=generator, device=device))


def _finish(out, like):
    return out if out.dtype == like.dtype else out.to(like.dtype)


# ------------------------------------------------------------------------------------ training


def q_sample(x0, t, schedule, noise=None, *, generator=None, seed=None, target="epsilon"):
    """Noise ``x0`` to timestep ``t``: (x_t, target) with x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.

    ``target``: "epsilon" (eps), "sample" (x0 itself) or "v_prediction" (sqrt(ab) eps - sqrt(1 - ab) x0).
    ``noise=None`` draws eps inside the kernel (Philox, key from ``seed`` or from ``generator`` /
    the default generator): same key, same result, and eps is never read from memory.
    Gradients flow to ``x0`` (e.g. a trainable encoder's latents), not to ``noise``. Under ``torch.compile(fullgraph=True)`` pass
    ``seed`` (drawing one from a generator reads a tensor on the host: a graph break).
    """
    _batch_tensor("x0", x0)
    _like("noise", noise, "x0", x0)
    _choice("target", target, TARGETS)
    _schedule(schedule, x0)
    t = _timesteps("t", t, x0.shape[0], x0.device, schedule.num_train_timesteps)
    backend = _backend.resolve("q_sample", x0.device.type, _NATIVE_DEVICES)
    key = -1 if noise is not None else _seed(generator, seed)
    if backend == "reference":
        if noise is None:
            noise = philox_normal_like(x0, key)
        return reference.q_sample(x0, t, schedule, noise, target=target)
    data = _kernel_input(backend, x0)

    def columns(t):
        return [reference.lookup(schedule.sqrt_alphas_cumprod, t),
                reference.lookup(schedule.sqrt_one_minus_alphas_cumprod, t)]

    coefs = _cached_coefs(schedule, ("q_sample",), columns, t, x0.shape[0], _acc_dtype(data))
    noise_in = None if noise is None else _kernel_input(backend, noise).detach()
    x_t, second = _core_ops(backend).diffusion_q_sample(data, noise_in, coefs, key,
                                                        target == "v_prediction")
    if target == "sample":
        return _finish(x_t, x0), x0
    return _finish(x_t, x0), _finish(second, x0)


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


def diffusion_loss(model_output, target, t, schedule, *, prediction_type="epsilon", snr_gamma=None,
                   reduction="mean"):
    """Per-sample MSE times the min-SNR-gamma weight (min(snr, g) / snr for epsilon,
    min(snr, g) / (snr + 1) for v_prediction, min(snr, g) for sample; 1 without ``snr_gamma``),
    reduced by ``reduction`` ("mean" | "sum" | "none"). Gradient to model_output (and target).
    Float32 (float64 for float64 inputs) result; fp32 accumulation for half inputs."""
    _batch_tensor("model_output", model_output)
    _like("target", target, "model_output", model_output)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    _choice("reduction", reduction, ("mean", "sum", "none"))
    if snr_gamma is not None:
        snr_gamma = check.positive_float("snr_gamma", snr_gamma)
    _schedule(schedule, model_output)
    t = _timesteps("t", t, model_output.shape[0], model_output.device, schedule.num_train_timesteps)
    backend = _backend.resolve("diffusion_loss", model_output.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.diffusion_loss(model_output, target, t, schedule, prediction_type=prediction_type,
                                        snr_gamma=snr_gamma, reduction=reduction)
    batch = model_output.shape[0]
    weight = _cached_coefs(schedule, ("snr_weight", prediction_type, snr_gamma),
                           lambda t: [reference.snr_weights(t, schedule, prediction_type, snr_gamma)],
                           t, batch, _acc_dtype(model_output)).reshape(batch)
    per_sample = _core_ops(backend).diffusion_loss_fwd(_kernel_input(backend, model_output),
                                                       _kernel_input(backend, target), weight)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


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


def _step(backend, sample, model_output, uncond, prev_x0, noise, columns, *, guidance_scale=1.0, clip=False,
          clip_range=1.0, seed=-1, write_x0=True):
    data = _kernel_input(backend, sample)
    coefs = columns if torch.is_tensor(columns) else _per_sample_table(columns, sample.shape[0], _acc_dtype(data))
    out, x0 = _core_ops(backend).diffusion_step(
        data, _kernel_input(backend, model_output), _kernel_input(backend, uncond), _kernel_input(backend, prev_x0),
        _kernel_input(backend, noise), coefs, float(guidance_scale), bool(clip), float(clip_range), int(seed),
        bool(write_x0))
    return _finish(out, sample), (_finish(x0, sample) if write_x0 else None)


def _check_step_inputs(model_output, sample, uncond, noise):
    _batch_tensor("sample", sample)
    _like("model_output", model_output, "sample", sample)
    _like("noise", noise, "sample", sample)


def _prev_timesteps(prev_t, t, schedule, sample):
    """None (the default t - step_ratio, cacheable) or the validated explicit ``prev_t``."""
    if prev_t is None:
        schedule.step_ratio  # raises when set_timesteps was not called
        return None
    return _timesteps("prev_t", prev_t, sample.shape[0], sample.device, schedule.num_train_timesteps,
                      allow_negative=True)


def _no_grad_inputs(*tensors):
    for name, x in tensors:
        if x is not None and x.requires_grad and torch.is_grad_enabled():
            raise ValueError(f"{name} requires grad: sampler steps are inference-only (use torch.no_grad())")


def _coefs(schedule, key, build, t, prev_t, sample, backend):
    """Coefficients of a DDIM / DDPM step: cached per timestep for the default prev_t."""
    dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
    if prev_t is None:
        return _cached_coefs(schedule, key, build, t, sample.shape[0], dtype)
    return build(t)


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
    std = torch.where(t > 0, variance.sqrt(), torch.zeros_like(variance))
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
    eta = float(eta)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    _schedule(schedule, sample)
    t = _timesteps("t", t, sample.shape[0], sample.device, schedule.num_train_timesteps)
    prev_t = _prev_timesteps(prev_t, t, schedule, sample)
    _no_grad_inputs(("model_output", model_output), ("sample", sample))
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    backend = _backend.resolve("ddim_step", sample.device.type, _NATIVE_DEVICES)
    key = -1
    if eta > 0 and noise is None:
        key = _seed(generator, seed)
    if backend == "reference":
        if eta > 0 and noise is None:
            noise = philox_normal_like(sample, key)
        prev = t - schedule.step_ratio if prev_t is None else prev_t
        out = reference.ddim_step(model_output, t, sample, schedule, prev, eta=eta, noise=noise,
                                   prediction_type=prediction_type, clip_sample=clip_sample,
                                   clip_sample_range=clip_sample_range,
                                   use_clipped_model_output=use_clipped_model_output, uncond=uncond,
                                   guidance_scale=guidance_scale, final_alpha_cumprod=final_alpha_cumprod)
        return out if return_x0 else (out[0], None)
    def build(t, prev_t=prev_t):
        if prev_t is None:
            prev_t = t - schedule.step_ratio
        return _ddim_columns(schedule, t, prev_t, eta, prediction_type, use_clipped_model_output,
                             final_alpha_cumprod)

    columns = _coefs(schedule, ("ddim", schedule.step_ratio if prev_t is None else None, eta, prediction_type,
                                bool(use_clipped_model_output), float(final_alpha_cumprod)),
                     build, t, prev_t, sample, backend)
    return _step(backend, sample, model_output, uncond, None, noise if eta > 0 else None, columns,
                 guidance_scale=guidance_scale, clip=clip_sample, clip_range=clip_sample_range, seed=key,
                 write_x0=return_x0)


def ddpm_step(model_output, t, sample, schedule, *, prev_t=None, noise=None, generator=None, seed=None,
              prediction_type="epsilon", variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
              uncond=None, guidance_scale=1.0, guidance_rescale=0.0, return_x0=True):
    """One DDPMScheduler.step (diffusers) fused: (prev_sample, pred_original_sample). The noise
    (added where t > 0) is ``noise`` or drawn in the kernel. ``return_x0``: as ddim_step."""
    _check_step_inputs(model_output, sample, uncond, noise)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    _choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    _schedule(schedule, sample)
    t = _timesteps("t", t, sample.shape[0], sample.device, schedule.num_train_timesteps)
    prev_t = _prev_timesteps(prev_t, t, schedule, sample)
    _no_grad_inputs(("model_output", model_output), ("sample", sample))
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    backend = _backend.resolve("ddpm_step", sample.device.type, _NATIVE_DEVICES)
    key = _seed(generator, seed) if noise is None else -1
    if backend == "reference":
        if noise is None:
            noise = philox_normal_like(sample, key)
        prev = t - schedule.step_ratio if prev_t is None else prev_t
        out = reference.ddpm_step(model_output, t, sample, schedule, prev, noise=noise,
                                   prediction_type=prediction_type, variance_type=variance_type,
                                   clip_sample=clip_sample, clip_sample_range=clip_sample_range, uncond=uncond,
                                   guidance_scale=guidance_scale)
        return out if return_x0 else (out[0], None)
    def build(t, prev_t=prev_t):
        if prev_t is None:
            prev_t = t - schedule.step_ratio
        return _ddpm_columns(schedule, t, prev_t, prediction_type, variance_type)

    columns = _coefs(schedule, ("ddpm", schedule.step_ratio if prev_t is None else None, prediction_type,
                                variance_type), build, t, prev_t, sample, backend)
    return _step(backend, sample, model_output, uncond, None, noise, columns, guidance_scale=guidance_scale,
                 clip=clip_sample, clip_range=clip_sample_range, seed=key, write_x0=return_x0)


def _sigma(name, value, sample):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=torch.float64, device=sample.device)
    check.tensor(name, value)
    if not (value.dim() == 0 or (value.dim() == 1 and value.shape[0] in (1, sample.shape[0]))):
        raise ValueError(f"{name} must be a scalar or have shape ({sample.shape[0]},), got {tuple(value.shape)}")
    if value.device != sample.device:
        raise ValueError(f"{name} is on {value.device} but sample is on {sample.device}")
    if _values_checkable(value) and value.numel():
        low = float(value) if value.dim() == 0 else float(value.min())  # NaN fails the test below
        if not low >= 0:
            raise ValueError(f"{name} must be >= 0, got {low}")
    return value.to(torch.float64)


def euler_scale_model_input(sample, sigma):
    """EulerDiscreteScheduler.scale_model_input: sample / sqrt(sigma^2 + 1)."""
    _batch_tensor("sample", sample)
    sigma = _sigma("sigma", sigma, sample)
    return reference.euler_scale_model_input(sample, sigma)


def euler_step(model_output, sample, sigma, sigma_next, *, prediction_type="epsilon", uncond=None,
               guidance_scale=1.0, guidance_rescale=0.0, return_x0=True):
    """One EulerDiscreteScheduler.step (diffusers, s_churn = 0) fused: (prev_sample, x0).
    ``sigma`` / ``sigma_next``: device tensors (``schedule.sigmas_for(timesteps)``)."""
    _check_step_inputs(model_output, sample, uncond, None)
    _choice("prediction_type", prediction_type, PREDICTION_TYPES)
    sigma = _sigma("sigma", sigma, sample)
    sigma_next = _sigma("sigma_next", sigma_next, sample)
    _no_grad_inputs(("model_output", model_output), ("sample", sample))
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    backend = _backend.resolve("euler_step", sample.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        out = reference.euler_step(model_output, sample, sigma, sigma_next, prediction_type=prediction_type,
                                    uncond=uncond, guidance_scale=guidance_scale)
        return out if return_x0 else (out[0], None)
    coefs = _core_ops(backend).diffusion_sigma_coefs(sigma, sigma_next, None, sample.shape[0], "euler",
                                                     prediction_type, _acc_dtype(sample))
    return _step(backend, sample, model_output, uncond, None, None, coefs, guidance_scale=guidance_scale,
                 write_x0=return_x0)


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
    _no_grad_inputs(("model_output", model_output), ("sample", sample))
    model_output, uncond = _guidance(model_output, uncond, guidance_scale, guidance_rescale)
    backend = _backend.resolve("dpmpp_2m_step", sample.device.type, _NATIVE_DEVICES)
    if backend == "reference":
        return reference.dpmpp_2m_step(model_output, sample, sigma, sigma_next, prev_x0, sigma_prev,
                                       prediction_type=prediction_type, uncond=uncond,
                                       guidance_scale=guidance_scale)
    coefs = _core_ops(backend).diffusion_sigma_coefs(sigma, sigma_next, sigma_prev if prev_x0 is not None else None,
                                                     sample.shape[0], "dpmpp_2m", prediction_type,
                                                     _acc_dtype(sample))
    return _step(backend, sample, model_output, uncond, prev_x0, None, coefs, guidance_scale=guidance_scale)
