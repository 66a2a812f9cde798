"""Triton kernels of the diffusion family, registered for ``torch.ops.sslfast_triton.*``.

Elementwise, one pass over the data. Per-sample coefficients come from a per-timestep table
[T, K] at the timesteps ``t`` (gathered in the kernel, clamped to the table; the public function
checks the range asynchronously) or from a [B, K] table (see ``csrc/cpu/diffusion.cpp`` for the
math). A program owns BLOCK Philox blocks g and the four elements k * Q + g (Q = ceil(n / 4))
whose noise is normal k of block g: four contiguous loads / stores, one Philox4x32-10 per four
normals, the same stream as the C++ kernels. The Philox key is read from a device tensor, so a
key drawn from a CUDA generator never visits the host. Offsets are int64; half inputs compute in
fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from . import register

STEP_COEFS = 10

_BLOCK = 256
_LOSS_BLOCK = 1024


@triton.jit
def _philox_normal4(key_ptr, g):
    """Philox4x32-10 on counter (g_lo, g_hi, 0, 0), key (key_lo, key_hi) of the int64 at key_ptr
    -> 4 normals (Box-Muller on (u0, u1), (u2, u3) exactly as tl.randn4x)."""
    key = tl.load(key_ptr)
    seed_lo = (key & 0xFFFFFFFF).to(tl.uint32)
    seed_hi = ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = (g & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((g >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c2 = tl.zeros_like(c0)
    c3 = tl.zeros_like(c0)
    k0 = tl.zeros_like(c0) + seed_lo
    k1 = tl.zeros_like(c0) + seed_hi
    round_a = tl.full(c0.shape, 0xD2511F53, tl.uint32)
    round_b = tl.full(c0.shape, 0xCD9E8D57, tl.uint32)
    for _ in tl.static_range(10):
        a0 = c0
        a2 = c2
        c0 = tl.umulhi(round_b, a2) ^ c1 ^ k0
        c2 = tl.umulhi(round_a, a0) ^ c3 ^ k1
        c1 = round_b * a2
        c3 = round_a * a0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    u0 = _uniform(c0)
    u1 = _uniform(c1)
    u2 = _uniform(c2)
    u3 = _uniform(c3)
    r01 = tl.sqrt(-2.0 * tl.log(tl.maximum(u0, 1.0e-7)))
    r23 = tl.sqrt(-2.0 * tl.log(tl.maximum(u2, 1.0e-7)))
    th01 = 6.283185307179586 * u1
    th23 = 6.283185307179586 * u3
    return r01 * tl.cos(th01), r01 * tl.sin(th01), r23 * tl.cos(th23), r23 * tl.sin(th23)


@triton.jit
def _uniform(x):
    s = x.to(tl.int32, bitcast=True)
    s = tl.where(s < 0, -s - 1, s)
    return s.to(tl.float32) * 4.6566127342e-10


@triton.jit
def _select4(k: tl.constexpr, z0, z1, z2, z3):
    if k == 0:
        return z0
    elif k == 1:
        return z1
    elif k == 2:
        return z2
    else:
        return z3


@triton.jit
def _coef_row(table_ptr, t_ptr, b, t_step, steps, ok, NCOEF: tl.constexpr, GATHER: tl.constexpr):
    """Pointer to sample b's coefficient row: table[t[b]] (t clamped to [0, steps)), or table[b]."""
    if GATHER:
        step = tl.load(t_ptr + b * t_step, mask=ok, other=0).to(tl.int64)
        step = tl.minimum(tl.maximum(step, 0), steps - 1)
        return table_ptr + step * NCOEF
    else:
        return table_ptr + b * NCOEF


@triton.jit
def _q_sample_kernel(x0_ptr, noise_ptr, table_ptr, t_ptr, key_ptr, xt_ptr, target_ptr, n, inner, groups, t_step,
                     steps, NOISE_FROM_SEED: tl.constexpr, V_TARGET: tl.constexpr, BLOCK: tl.constexpr):
    """x_t = a_b x0 + s_b eps; target = eps, or v = a_b eps - s_b x0 ((a_b, s_b) = table[t[b]])."""
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    g_ok = g < groups
    if NOISE_FROM_SEED:
        z0, z1, z2, z3 = _philox_normal4(key_ptr, g)
    for k in tl.static_range(4):
        i = k * groups + g
        ok = g_ok & (i < n)
        row = _coef_row(table_ptr, t_ptr, i // inner, t_step, steps, ok, 2, True)
        a = tl.load(row, mask=ok, other=0.0)
        s = tl.load(row + 1, mask=ok, other=0.0)
        x = tl.load(x0_ptr + i, mask=ok, other=0.0).to(a.dtype)
        if NOISE_FROM_SEED:
            eps = _select4(k, z0, z1, z2, z3).to(a.dtype)
        else:
            eps = tl.load(noise_ptr + i, mask=ok, other=0.0).to(a.dtype)
        tl.store(xt_ptr + i, (a * x + s * eps).to(xt_ptr.dtype.element_ty), mask=ok)
        if V_TARGET:
            tl.store(target_ptr + i, (a * eps - s * x).to(target_ptr.dtype.element_ty), mask=ok)
        else:
            tl.store(target_ptr + i, eps.to(target_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _q_sample_bwd_kernel(gx_ptr, gt_ptr, table_ptr, t_ptr, out_ptr, n, inner, t_step, steps,
                         HAS_GX: tl.constexpr, HAS_GT: tl.constexpr, BLOCK: tl.constexpr):
    """d/dx0 of (x_t, v): a_b g_xt - s_b g_v."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    row = _coef_row(table_ptr, t_ptr, i // inner, t_step, steps, ok, 2, True)
    a = tl.load(row, mask=ok, other=0.0)
    s = tl.load(row + 1, mask=ok, other=0.0)
    r = tl.zeros_like(a)
    if HAS_GX:
        r += a * tl.load(gx_ptr + i, mask=ok, other=0.0).to(a.dtype)
    if HAS_GT:
        r -= s * tl.load(gt_ptr + i, mask=ok, other=0.0).to(a.dtype)
    tl.store(out_ptr + i, r.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _step_kernel(x_ptr, m_ptr, u_ptr, p_ptr, noise_ptr, table_ptr, t_ptr, key_ptr, out_ptr, x0_ptr, n, inner,
                 groups, t_step, steps, guidance_scale, clip_range,
                 HAS_UNCOND: tl.constexpr, HAS_PREV: tl.constexpr, NOISE: tl.constexpr, CLIP: tl.constexpr,
                 WRITE_X0: tl.constexpr, GATHER: tl.constexpr, NCOEF: tl.constexpr, BLOCK: tl.constexpr):
    """Generic sampler step (NOISE: 0 none, 1 tensor, 2 Philox from the seed):
    m = u + g (cond - u); x0 = clamp(c0 x + c1 m); eps = c2 x + c3 m + c4 x0;
    out = c5 x0 + c6 eps + c7 x + c8 prev + c9 noise."""
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    g_ok = g < groups
    if NOISE == 2:
        z0, z1, z2, z3 = _philox_normal4(key_ptr, g)
    for k in tl.static_range(4):
        i = k * groups + g
        ok = g_ok & (i < n)
        row = _coef_row(table_ptr, t_ptr, i // inner, t_step, steps, ok, NCOEF, GATHER)
        c0 = tl.load(row + 0, mask=ok, other=0.0)
        c1 = tl.load(row + 1, mask=ok, other=0.0)
        c2 = tl.load(row + 2, mask=ok, other=0.0)
        c3 = tl.load(row + 3, mask=ok, other=0.0)
        c4 = tl.load(row + 4, mask=ok, other=0.0)
        c5 = tl.load(row + 5, mask=ok, other=0.0)
        c6 = tl.load(row + 6, mask=ok, other=0.0)
        c7 = tl.load(row + 7, mask=ok, other=0.0)
        x = tl.load(x_ptr + i, mask=ok, other=0.0).to(c0.dtype)
        m = tl.load(m_ptr + i, mask=ok, other=0.0).to(c0.dtype)
        if HAS_UNCOND:
            u = tl.load(u_ptr + i, mask=ok, other=0.0).to(c0.dtype)
            m = u + guidance_scale * (m - u)
        x0 = c0 * x + c1 * m
        if CLIP:
            # NaN stays NaN (tl.minimum / maximum would drop it).
            x0 = tl.where(x0 < -clip_range, -clip_range, tl.where(x0 > clip_range, clip_range, x0))
        eps = c2 * x + c3 * m + c4 * x0
        r = c5 * x0 + c6 * eps + c7 * x
        if HAS_PREV:
            c8 = tl.load(row + 8, mask=ok, other=0.0)
            r += c8 * tl.load(p_ptr + i, mask=ok, other=0.0).to(c0.dtype)
        if NOISE == 1:
            c9 = tl.load(row + 9, mask=ok, other=0.0)
            r += c9 * tl.load(noise_ptr + i, mask=ok, other=0.0).to(c0.dtype)
        if NOISE == 2:
            c9 = tl.load(row + 9, mask=ok, other=0.0)
            r += c9 * _select4(k, z0, z1, z2, z3).to(c0.dtype)
        tl.store(out_ptr + i, r.to(out_ptr.dtype.element_ty), mask=ok)
        if WRITE_X0:
            tl.store(x0_ptr + i, x0.to(x0_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _log64(x, LIBDEVICE: tl.constexpr):
    # float64 log / exp through libdevice on CUDA (as Inductor does for float64); the
    # interpreter has only tl.log / tl.exp.
    if LIBDEVICE:
        return libdevice.log(x)
    else:
        return tl.log(x)


@triton.jit
def _exp64(x, LIBDEVICE: tl.constexpr):
    if LIBDEVICE:
        return libdevice.exp(x)
    else:
        return tl.exp(x)


@triton.jit
def _dpm_lambda(sigma, LIBDEVICE: tl.constexpr):
    """log(alpha) - log(sigma_t) at Karras sigma ``sigma`` (alpha = 1 / sqrt(sigma^2 + 1))."""
    alpha = 1.0 / tl.sqrt(sigma * sigma + 1.0)
    return _log64(alpha, LIBDEVICE) - _log64(sigma * alpha, LIBDEVICE)


@triton.jit
def _sigma_coefs_kernel(sigma_ptr, next_ptr, prev_ptr, coef_ptr, batch, sigma_step, next_step, prev_step,
                        DPM: tl.constexpr, PREDICTION: tl.constexpr, HAS_PREV: tl.constexpr,
                        LIBDEVICE: tl.constexpr, NCOEF: tl.constexpr, BLOCK: tl.constexpr):
    """Euler (DPM False) / DPM-Solver++ 2M rows of the step's coefficient table from the sigmas,
    in float64: the math of ``diffusion_sigma_coefs`` in csrc/cpu/diffusion.cpp. PREDICTION: 0
    epsilon, 1 sample, 2 v_prediction; a scalar sigma is read with step 0."""
    b = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = b < batch
    s = tl.load(sigma_ptr + b * sigma_step, mask=ok, other=1.0).to(tl.float64)
    sn = tl.load(next_ptr + b * next_step, mask=ok, other=1.0).to(tl.float64)
    zero = tl.zeros([BLOCK], dtype=tl.float64)
    norm = tl.sqrt(s * s + 1.0)
    if PREDICTION == 1:
        c0 = zero
        c1 = zero + 1.0
    elif PREDICTION == 0:
        if DPM:
            c0 = norm
        else:
            c0 = zero + 1.0
        c1 = -s
    else:
        if DPM:
            c0 = 1.0 / norm
        else:
            c0 = 1.0 / (norm * norm)
        c1 = -s / norm
    c8 = zero
    if DPM:
        alpha_t = 1.0 / tl.sqrt(sn * sn + 1.0)
        lambda_s0 = _dpm_lambda(s, LIBDEVICE)
        h = _dpm_lambda(sn, LIBDEVICE) - lambda_s0
        phi = alpha_t * (_exp64(-h, LIBDEVICE) - 1.0)
        c5 = -phi
        if HAS_PREV:
            s1 = tl.load(prev_ptr + b * prev_step, mask=ok, other=1.0).to(tl.float64)
            r0 = (lambda_s0 - _dpm_lambda(s1, LIBDEVICE)) / h
            c5 = -phi * (1.0 + 0.5 / r0)
            c8 = 0.5 * phi / r0
        c7 = (sn * alpha_t) / (s / norm)
    else:
        ratio = (sn - s) / s
        c5 = -ratio
        c7 = 1.0 + ratio
    row = coef_ptr + b * NCOEF
    ty = coef_ptr.dtype.element_ty
    tl.store(row + 0, c0.to(ty), mask=ok)
    tl.store(row + 1, c1.to(ty), mask=ok)
    tl.store(row + 2, zero.to(ty), mask=ok)
    tl.store(row + 3, zero.to(ty), mask=ok)
    tl.store(row + 4, zero.to(ty), mask=ok)
    tl.store(row + 5, c5.to(ty), mask=ok)
    tl.store(row + 6, zero.to(ty), mask=ok)
    tl.store(row + 7, c7.to(ty), mask=ok)
    tl.store(row + 8, c8.to(ty), mask=ok)
    tl.store(row + 9, zero.to(ty), mask=ok)


@triton.jit
def _loss_partial_kernel(m_ptr, t_ptr, partial_ptr, inner, chunks, BLOCK: tl.constexpr,
                         ACC_DTYPE: tl.constexpr):
    """partial[b, c] = sum over chunk c of sample b of (m - t)^2, in fp32 (fp64 for fp64)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    j = c * BLOCK + tl.arange(0, BLOCK)
    ok = j < inner
    m = tl.load(m_ptr + b * inner + j, mask=ok, other=0.0).to(ACC_DTYPE)
    t = tl.load(t_ptr + b * inner + j, mask=ok, other=0.0).to(ACC_DTYPE)
    d = m - t
    tl.store(partial_ptr + b * chunks + c, tl.sum(d * d, axis=0))


@triton.jit
def _loss_bwd_kernel(m_ptr, t_ptr, scale_ptr, grad_ptr, n, inner, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    s = tl.load(scale_ptr + i // inner, mask=ok, other=0.0)
    m = tl.load(m_ptr + i, mask=ok, other=0.0).to(s.dtype)
    t = tl.load(t_ptr + i, mask=ok, other=0.0).to(s.dtype)
    tl.store(grad_ptr + i, (s * (m - t)).to(grad_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------


def _acc_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _geometry(x):
    n = x.numel()
    return n, n // x.shape[0], (n + 3) // 4


def _key(like, seed, generator):
    """The Philox key as an int64 [1] tensor on ``like``'s device: ``seed``, or drawn from
    ``generator`` (the device's default one) as torch.randint(0, 2**62) draws it, without a sync."""
    if seed >= 0:
        return torch.full((1,), seed, dtype=torch.int64, device=like.device)
    device = generator.device if generator is not None else like.device
    return torch.randint(0, 2 ** 62, (1,), generator=generator, device=device).to(like.device, non_blocking=True)


def _timesteps(t):
    """(t as a flat int64 tensor, its stride per sample: 0 for a scalar or [1])."""
    t = t.reshape(-1).to(torch.int64).contiguous()
    return t, int(t.shape[0] > 1)


def _compute(x, dtype):
    return None if x is None else x.to(dtype).contiguous()


def q_sample_fwd(x0, noise, table, t, seed, generator, v_target):
    x0 = x0.contiguous()
    x_t, target = torch.empty_like(x0), torch.empty_like(x0)
    n, inner, groups = _geometry(x0)
    if n:
        ts, t_step = _timesteps(t)
        _q_sample_kernel[(triton.cdiv(groups, _BLOCK),)](
            x0, noise.contiguous() if noise is not None else x0, _compute(table, _acc_dtype(x0)), ts,
            _key(x0, seed, generator) if noise is None else ts, x_t, target, n, inner, groups, t_step,
            table.shape[0], NOISE_FROM_SEED=noise is None, V_TARGET=bool(v_target), BLOCK=_BLOCK)
    return x_t, target


def q_sample_bwd(grad_x_t, grad_target, table, t, v_target):
    like = grad_x_t if grad_x_t is not None else grad_target
    grad_target = grad_target if v_target else None
    grad = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    n, inner, _ = _geometry(like)
    if n:
        ts, t_step = _timesteps(t)
        _q_sample_bwd_kernel[(triton.cdiv(n, _LOSS_BLOCK),)](
            grad_x_t.contiguous() if grad_x_t is not None else like,
            grad_target.contiguous() if grad_target is not None else like, _compute(table, _acc_dtype(like)), ts,
            grad, n, inner, t_step, table.shape[0], HAS_GX=grad_x_t is not None, HAS_GT=grad_target is not None,
            BLOCK=_LOSS_BLOCK)
    return grad


def _run_step(sample, model_output, uncond, prev_x0, noise, table, t, guidance_scale, clip, clip_range, key,
              write_x0):
    sample = sample.contiguous()
    out = torch.empty_like(sample)
    x0 = torch.empty_like(sample) if write_x0 else sample.new_empty((0,))
    n, inner, groups = _geometry(sample)
    noise_mode = 1 if noise is not None else (2 if key is not None else 0)
    if n:
        ts, t_step = _timesteps(t) if t is not None else (table, 0)
        _step_kernel[(triton.cdiv(groups, _BLOCK),)](
            sample, model_output.contiguous(), uncond.contiguous() if uncond is not None else sample,
            prev_x0.contiguous() if prev_x0 is not None else sample,
            noise.contiguous() if noise is not None else sample, _compute(table, _acc_dtype(sample)), ts,
            key if key is not None else ts, out, x0 if write_x0 else out, n, inner, groups, t_step,
            table.shape[0], float(guidance_scale), float(clip_range),
            HAS_UNCOND=uncond is not None, HAS_PREV=prev_x0 is not None, NOISE=noise_mode, CLIP=bool(clip),
            WRITE_X0=bool(write_x0), GATHER=t is not None, NCOEF=STEP_COEFS, BLOCK=_BLOCK)
    return out, x0


def diffusion_step(sample, model_output, uncond, prev_x0, noise, table, t, guidance_scale, clip, clip_range,
                   random_noise, seed, generator, write_x0):
    key = _key(sample, seed, generator) if random_noise and noise is None else None
    return _run_step(sample, model_output, uncond, prev_x0, noise, table, t, guidance_scale, clip, clip_range, key,
                     write_x0)


_PREDICTIONS = {"epsilon": 0, "sample": 1, "v_prediction": 2}
_SOLVERS = ("euler", "dpmpp_2m")
_COEF_BLOCK = 128


def _sigma_coefs(sigma, sigma_next, sigma_prev, batch, solver, prediction_type, dtype):
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    if prediction_type not in _PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {tuple(_PREDICTIONS)}, got {prediction_type!r}")
    if solver == "euler" and sigma_prev is not None:
        raise ValueError("sigma_prev is a DPM-Solver++ 2M input")
    columns = [c.reshape(-1).contiguous() if c is not None else None for c in (sigma, sigma_next, sigma_prev)]
    for name, c in zip(("sigma", "sigma_next", "sigma_prev"), columns):
        if c is not None and c.shape[0] not in (1, batch):
            raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(c.shape)}")
    sigma, sigma_next, sigma_prev = columns
    coefs = torch.empty((batch, STEP_COEFS), dtype=dtype, device=sigma.device)
    _sigma_coefs_kernel[(triton.cdiv(batch, _COEF_BLOCK),)](
        sigma, sigma_next, sigma_prev if sigma_prev is not None else sigma, coefs, batch,
        int(sigma.shape[0] > 1), int(sigma_next.shape[0] > 1), int(sigma_prev is not None and sigma_prev.shape[0] > 1),
        DPM=solver == "dpmpp_2m", PREDICTION=_PREDICTIONS[prediction_type], HAS_PREV=sigma_prev is not None,
        LIBDEVICE=sigma.device.type == "cuda", NCOEF=STEP_COEFS, BLOCK=_COEF_BLOCK)
    return coefs


def diffusion_sigma_step(sample, model_output, uncond, prev_x0, sigma, sigma_next, sigma_prev, solver,
                         prediction_type, guidance_scale, write_x0):
    coefs = _sigma_coefs(sigma, sigma_next, sigma_prev, sample.shape[0], solver, prediction_type,
                         _acc_dtype(sample))
    return _run_step(sample, model_output, uncond, prev_x0, None, coefs, None, guidance_scale, False, 1.0, None,
                     write_x0)


def _weights_at(weights, t, batch, acc):
    """[B] per-sample loss weights weights[t] (t clamped, as the other kernels read tables)."""
    ts = t.reshape(-1).to(torch.int64).clamp(0, weights.shape[0] - 1)
    return weights.to(acc).index_select(0, ts).expand(batch)


def diffusion_loss_fwd(model_output, target, weights, t, reduction):
    model_output, target = model_output.contiguous(), target.contiguous()
    batch = model_output.shape[0]
    inner = model_output.numel() // batch
    chunks = max(1, triton.cdiv(inner, _LOSS_BLOCK))
    acc = _acc_dtype(model_output)
    partial = torch.zeros((batch, chunks), dtype=acc, device=model_output.device)
    if inner:
        _loss_partial_kernel[(batch, chunks)](model_output, target, partial, inner, chunks, BLOCK=_LOSS_BLOCK,
                                              ACC_DTYPE=tl.float64 if acc == torch.float64 else tl.float32)
    # Chunk partials summed in a fixed order: deterministic.
    per_sample = partial.sum(dim=1) * _weights_at(weights, t, batch, acc) / max(inner, 1)
    if reduction == 1:
        return per_sample.mean()
    return per_sample.sum() if reduction == 2 else per_sample


def diffusion_loss_bwd(grad, model_output, target, weights, t, reduction):
    model_output, target = model_output.contiguous(), target.contiguous()
    batch = model_output.shape[0]
    n = model_output.numel()
    inner = n // batch
    acc = _acc_dtype(model_output)
    per_sample = grad.to(acc).reshape(-1).expand(batch)
    if reduction == 1:
        per_sample = per_sample / batch
    scale = (per_sample * _weights_at(weights, t, batch, acc) * (2.0 / max(inner, 1))).contiguous()
    out = torch.empty_like(model_output)
    if n:
        _loss_bwd_kernel[(triton.cdiv(n, _LOSS_BLOCK),)](model_output, target, scale, out, n, inner,
                                                         BLOCK=_LOSS_BLOCK)
    return out


register({
    "q_sample_fwd": q_sample_fwd,
    "q_sample_bwd": q_sample_bwd,
    "diffusion_loss_fwd": diffusion_loss_fwd,
    "diffusion_loss_bwd": diffusion_loss_bwd,
    "diffusion_step": diffusion_step,
    "diffusion_sigma_step": diffusion_sigma_step,
})
