"""Diffusion family: schedule tables vs diffusers' formulas (written here), every runnable
backend vs the float64 reference given explicit noise, in-kernel Philox noise (statistics,
reproducibility, cross-backend), gradients, opcheck, a compiled sampling loop, determinism,
NaN propagation, bad input."""

import math
import re

import numpy as np
import pytest
import torch

import sslfast
from sslfast import diffusion as D
from sslfast.reference import diffusion as reference

from conftest import DEVICE, runnable_backends

BACKENDS = runnable_backends(torch.device(DEVICE).type, "q_sample")
FAST_BACKENDS = [b for b in BACKENDS if b != "reference"]
# [B, ...] shapes: one element per sample, odd sizes, a sample larger than one C++ chunk.
SHAPES = [(1, 1), (3, 7), (2, 3, 5, 7), (2, 4, 65, 129)]
SMALL_SHAPES = [(1, 1), (3, 7), (2, 3, 5, 7)]
DTYPES = [torch.float64, torch.float32, torch.bfloat16] if DEVICE == "cpu" else [torch.float32, torch.bfloat16]


def shapes_for(backend):
    return SMALL_SHAPES if (backend == "triton" and DEVICE == "cpu") else SHAPES


def randn(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE, dtype)


def per_sample_t(batch, seed=0, high=1000):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (batch,), generator=g).to(DEVICE)


def schedule(kind="linear", **kwargs):
    params = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (1e-4, 0.02)}[kind]
    return D.NoiseSchedule(1000, kind, *params, device=DEVICE, **kwargs)


def assert_within_eager_error(got, eager, truth, floor):
    """DESIGN.md tolerance rule: error vs float64 <= 2x eager's error in the same dtype + floor."""
    truth = truth.double()
    err = (got.double() - truth).abs().max().item()
    eager_err = (eager.double() - truth).abs().max().item()
    bound = 2 * eager_err + floor * (1 + truth.abs().max().item())
    assert err <= bound, f"error {err:.3e} > bound {bound:.3e} (eager error {eager_err:.3e})"


FLOORS = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}


def compare(fn_public, fn_reference, inputs, backend, dtype):
    """Public op under ``backend`` in ``dtype`` vs the reference in ``dtype`` and in float64."""
    cast = [x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs]
    with sslfast.use_backend(backend):
        got = fn_public(*cast)
    eager = fn_reference(*cast)
    truth = fn_reference(*[x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs])
    got, eager, truth = [o if isinstance(o, (tuple, list)) else (o,) for o in (got, eager, truth)]
    for g, e, t in zip(got, eager, truth):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert_within_eager_error(g, e, t, FLOORS[dtype])


# ------------------------------------------------------------------------ schedule vs diffusers


def diffusers_betas(kind, n=1000, beta_start=1e-4, beta_end=0.02):
    """DDPMScheduler.__init__ (diffusers, float32 tables), written from its source."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float32) ** 2
    betas = []  # betas_for_alpha_bar(n, max_beta=0.999, alpha_transform_type="cosine")
    for i in range(n):
        t1, t2 = i / n, (i + 1) / n
        bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas.append(min(1 - bar(t2) / bar(t1), 0.999))
    return torch.tensor(betas, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_tables_match_diffusers(kind):
    start, end = (0.00085, 0.012) if kind == "scaled_linear" else (1e-4, 0.02)
    s = D.NoiseSchedule(1000, kind, start, end)
    betas = diffusers_betas(kind, 1000, start, end)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    assert s.betas.dtype == torch.float64
    torch.testing.assert_close(s.betas, betas.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(s.alphas_cumprod, alphas_cumprod.double(), rtol=0, atol=1e-6)
    # The square-root tables derive from the float64 alphas_cumprod (diffusers' own float32
    # sqrt(1 - ab) near t = 0 carries ~1e-6 of float32 rounding, amplified by the sqrt).
    torch.testing.assert_close(s.sqrt_alphas_cumprod, alphas_cumprod.double() ** 0.5, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.sqrt_one_minus_alphas_cumprod, (1 - s.alphas_cumprod) ** 0.5, rtol=1e-15, atol=0)
    torch.testing.assert_close(s.snr, s.alphas_cumprod / (1 - s.alphas_cumprod))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_set_timesteps_matches_diffusers(spacing, steps):
    n = 1000
    s = D.NoiseSchedule(n)
    got = s.set_timesteps(steps, spacing).cpu().numpy()
    # DDIMScheduler.set_timesteps (diffusers), steps_offset = 0
    if spacing == "linspace":
        want = np.linspace(0, n - 1, steps).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ratio = n // steps
        want = (np.arange(0, steps) * ratio).round()[::-1].copy().astype(np.int64)
    else:
        ratio = n / steps
        want = np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1
    np.testing.assert_array_equal(got, want)
    assert s.step_ratio == n // steps


def test_euler_sigmas_match_diffusers():
    s = D.NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012)
    timesteps = np.linspace(0, 999, 30, dtype=np.float32)[::-1].copy()  # EulerDiscrete "linspace"
    betas = diffusers_betas("scaled_linear", 1000, 0.00085, 0.012)
    ac = torch.cumprod(1.0 - betas, dim=0).numpy()
    sigmas = np.array(((1 - ac) / ac) ** 0.5)
    want = np.concatenate([np.interp(timesteps, np.arange(0, len(sigmas)), sigmas), [0.0]])
    got = s.sigmas_for(torch.from_numpy(timesteps)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ q_sample / loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["epsilon", "sample", "v_prediction"])
def test_q_sample_matches_reference(backend, dtype, target):
    s = schedule("scaled_linear")
    for i, shape in enumerate(shapes_for(backend)):
        x0, noise = randn(*shape, seed=i), randn(*shape, seed=100 + i)
        for t in (per_sample_t(shape[0], seed=i), torch.tensor(999, device=DEVICE)):
            compare(lambda a, e: D.q_sample(a, t, s, e, target=target),
                    lambda a, e: reference.q_sample(a, t, s, e, target=target), (x0, noise), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prediction_type,snr_gamma", [("epsilon", None), ("epsilon", 5.0),
                                                        ("v_prediction", 5.0), ("sample", 1.0)])
def test_loss_matches_reference(backend, dtype, prediction_type, snr_gamma):
    s = schedule()
    for i, shape in enumerate(shapes_for(backend)):
        t = per_sample_t(shape[0], seed=i)
        m, target = randn(*shape, seed=i), randn(*shape, seed=50 + i)
        for reduction in ("mean", "sum", "none"):
            def run(fn, a, b):
                a = a.detach().requires_grad_()
                loss = fn(a, b, t, s, prediction_type=prediction_type, snr_gamma=snr_gamma, reduction=reduction)
                loss.sum().backward()
                return loss.detach(), a.grad
            compare(lambda a, b: run(D.diffusion_loss, a, b), lambda a, b: run(reference.diffusion_loss, a, b),
                    (m, target), backend, dtype)


def test_min_snr_weights_formula():
    s = schedule()
    t = torch.tensor([0, 10, 500, 999], device=DEVICE)
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    torch.testing.assert_close(reference.snr_weights(t, s, "epsilon", 5.0), torch.clamp(snr, max=5.0) / snr)
    torch.testing.assert_close(reference.snr_weights(t, s, "v_prediction", 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_loss_gradcheck(backend):
    s = schedule()
    t = per_sample_t(3, seed=3)
    m = randn(3, 2, 5, seed=1).requires_grad_()
    target = randn(3, 2, 5, seed=2).requires_grad_()
    with sslfast.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda a, b: D.diffusion_loss(a, b, t, s, prediction_type="v_prediction", snr_gamma=2.0,
                                          reduction="none"), (m, target))


# ------------------------------------------------------------------------ in-kernel noise


def _normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_kernel_noise_is_standard_normal_and_reproducible(backend):
    n = 40_000 if backend == "triton" else 400_000
    x0 = randn(4, n // 4, dtype=torch.float32, seed=7)
    s = schedule()
    t = torch.tensor([0, 10, 500, 999], device=DEVICE)
    with sslfast.use_backend(backend):
        x_t, eps = D.q_sample(x0, t, s, seed=1234)
        again, eps_again = D.q_sample(x0, t, s, seed=1234)
        _, other = D.q_sample(x0, t, s, seed=1235)
        g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
        _, from_g1 = D.q_sample(x0, t, s, generator=g1)
        _, from_g2 = D.q_sample(x0, t, s, generator=g2)
    assert torch.equal(x_t, again) and torch.equal(eps, eps_again) and torch.equal(from_g1, from_g2)
    assert not torch.equal(eps, other)
    z = eps.double().flatten().cpu()
    se = 1 / math.sqrt(z.numel())
    assert abs(z.mean().item()) < 5 * se
    assert abs(z.std().item() - 1) < 5 * se * math.sqrt(2)
    # Kolmogorov-Smirnov vs N(0, 1) (critical value ~1.63 / sqrt(n) at alpha = 1%, with margin).
    zs = torch.sort(z).values
    ecdf = torch.arange(1, zs.numel() + 1, dtype=torch.float64) / zs.numel()
    ks = (ecdf - _normal_cdf(zs)).abs().max().item()
    assert ks < 2.0 / math.sqrt(zs.numel()), ks
    # Neighbouring elements and the four Philox lanes are uncorrelated.
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 5 * se
    q = (z.numel() + 3) // 4
    assert abs(torch.corrcoef(torch.stack([z[:q - 1], z[q:2 * q - 1]]))[0, 1].item()) < 8 * se
    # x_t uses exactly that noise
    torch.testing.assert_close(x_t, reference.q_sample(x0, t, s, eps)[0], rtol=1e-6, atol=1e-6)


def test_backends_draw_the_same_noise():
    x0 = randn(3, 5, 7, dtype=torch.float32, seed=8)
    s = schedule()
    t = per_sample_t(3)
    want = D.philox_normal_like(x0, 42)
    for backend in BACKENDS:
        with sslfast.use_backend(backend):
            _, eps = D.q_sample(x0, t, s, seed=42)
        torch.testing.assert_close(eps, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs the Triton backend")
def test_philox_stream_is_tritons_randn4x():
    """The kernels' stream (counter (g, 0, 0, 0), key = seed) is tl.randn4x(seed, g)."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(out_ptr, seed, n_groups, BLOCK: tl.constexpr):
        g = tl.arange(0, BLOCK)
        z0, z1, z2, z3 = tl.randn4x(seed, g)
        ok = g < n_groups
        tl.store(out_ptr + g, z0, mask=ok)
        tl.store(out_ptr + n_groups + g, z1, mask=ok)
        tl.store(out_ptr + 2 * n_groups + g, z2, mask=ok)
        tl.store(out_ptr + 3 * n_groups + g, z3, mask=ok)

    out = torch.empty(4 * 16, device=DEVICE)
    kernel[(1,)](out, 77, 16, BLOCK=16)
    torch.testing.assert_close(out, D.philox_normal_like(out, 77), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ sampler steps

STEP_CONFIGS = [
    dict(prediction_type="epsilon"),
    dict(prediction_type="v_prediction", clip_sample=True, clip_sample_range=1.5),
    dict(prediction_type="sample", clip_sample=True, use_clipped_model_output=True),
    dict(prediction_type="epsilon", eta=0.7, guidance_scale=7.5),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", range(len(STEP_CONFIGS)))
def test_ddim_step_matches_reference(backend, dtype, config):
    cfg = dict(STEP_CONFIGS[config])
    guidance = cfg.pop("guidance_scale", None)
    s = schedule("scaled_linear")
    s.set_timesteps(50, "leading")
    for i, shape in enumerate(shapes_for(backend)):
        x, m, u, noise = (randn(*shape, seed=10 * i + k) for k in range(4))
        for t in (s.timesteps[3], per_sample_t(shape[0], seed=i), s.timesteps[-1]):
            kw = dict(cfg, uncond=None) if guidance is None else dict(cfg, guidance_scale=guidance)
            def public(m, x, e, u):
                k = dict(kw) if guidance is None else dict(kw, uncond=u)
                return D.ddim_step(m, t, x, s, noise=e, **k)
            def ref(m, x, e, u):
                k = dict(kw) if guidance is None else dict(kw, uncond=u)
                return reference.ddim_step(m, t, x, s, t - s.step_ratio, noise=e, **k)
            compare(public, ref, (m, x, noise, u), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddpm_step_matches_reference(backend, dtype, variance_type, prediction_type):
    s = schedule()
    s.set_timesteps(1000)
    for i, shape in enumerate(shapes_for(backend)):
        x, m, u, noise = (randn(*shape, seed=20 * i + k) for k in range(4))
        t = per_sample_t(shape[0], seed=i)
        t[0] = 0  # no noise at t = 0
        kw = dict(prediction_type=prediction_type, variance_type=variance_type, guidance_scale=3.0)
        compare(lambda m, x, e, u: D.ddpm_step(m, t, x, s, noise=e, uncond=u, **kw),
                lambda m, x, e, u: reference.ddpm_step(m, t, x, s, t - 1, noise=e, uncond=u, **kw),
                (m, x, noise, u), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_and_dpmpp_steps_match_reference(backend, dtype, prediction_type):
    s = schedule("scaled_linear")
    sig = s.sigmas_for(s.set_timesteps(20, "trailing").double())
    for i, shape in enumerate(shapes_for(backend)):
        x, m, u, prev = (randn(*shape, seed=30 * i + k) for k in range(4))
        kw = dict(prediction_type=prediction_type, guidance_scale=5.0)
        for step in (0, 7, 19):
            a, b, c = sig[step], sig[step + 1], sig[max(step - 1, 0)]
            compare(lambda m, x, u: D.euler_step(m, x, a, b, uncond=u, **kw),
                    lambda m, x, u: reference.euler_step(m, x, a, b, uncond=u, **kw), (m, x, u), backend, dtype)
            compare(lambda m, x, u: D.dpmpp_2m_step(m, x, a, b, uncond=u, **kw),
                    lambda m, x, u: reference.dpmpp_2m_step(m, x, a, b, uncond=u, **kw), (m, x, u), backend, dtype)
            if 0 < step < 19:  # diffusers' final step (sigma_next = 0) is first order
                compare(lambda m, x, p: D.dpmpp_2m_step(m, x, a, b, p, c, **kw),
                        lambda m, x, p: reference.dpmpp_2m_step(m, x, a, b, p, c, **kw), (m, x, prev), backend,
                        dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_euler_and_dpmpp_per_sample_sigmas(backend, prediction_type):
    """[B] sigmas (each sample at its own step) and mixed scalar / [1] / [B] sigmas."""
    s = schedule("scaled_linear")
    sig = s.sigmas_for(s.set_timesteps(20, "trailing").double())
    steps = torch.tensor([1, 7, 12, 18], device=DEVICE)
    a, b, c = sig[steps], sig[steps + 1], sig[steps - 1]
    x, m, prev = (randn(4, 3, 5, seed=60 + k) for k in range(3))
    kw = dict(prediction_type=prediction_type)
    for dtype in (torch.float64, torch.float32):
        for sigmas in ((a, b, c), (a[1], b, c[:1]), (a[:1], b[2], c)):
            compare(lambda m, x: D.euler_step(m, x, *sigmas[:2], **kw),
                    lambda m, x: reference.euler_step(m, x, *sigmas[:2], **kw), (m, x), backend, dtype)
            compare(lambda m, x, p: D.dpmpp_2m_step(m, x, *sigmas[:2], p, sigmas[2], **kw),
                    lambda m, x, p: reference.dpmpp_2m_step(m, x, *sigmas[:2], p, sigmas[2], **kw),
                    (m, x, prev), backend, dtype)


def test_euler_scale_model_input():
    x = randn(2, 3, 4)
    sigma = torch.tensor(2.0, dtype=torch.float64, device=DEVICE)
    torch.testing.assert_close(D.euler_scale_model_input(x, sigma), x / 5 ** 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_guidance_rescale(backend):
    s = schedule()
    s.set_timesteps(10)
    x, m, u = randn(2, 3, 8, seed=1), randn(2, 3, 8, seed=2), randn(2, 3, 8, seed=3)
    t = s.timesteps[2]
    with sslfast.use_backend(backend):
        got = D.ddim_step(m, t, x, s, uncond=u, guidance_scale=6.0, guidance_rescale=0.7)
    want = reference.ddim_step(m, t, x, s, t - 100, uncond=u, guidance_scale=6.0, guidance_rescale=0.7)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddpm_in_kernel_noise_is_reproducible(backend):
    s = schedule()
    s.set_timesteps(100)
    x, m = randn(2, 3, 9, dtype=torch.float32, seed=1), randn(2, 3, 9, dtype=torch.float32, seed=2)
    t = s.timesteps[5]
    with sslfast.use_backend(backend):
        a = D.ddpm_step(m, t, x, s, seed=5)[0]
        b = D.ddpm_step(m, t, x, s, seed=5)[0]
        c = D.ddpm_step(m, t, x, s, seed=6)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    want = reference.ddpm_step(m, t, x, s, t - 10, noise=D.philox_normal_like(x, 5))[0]
    torch.testing.assert_close(a, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ ops, compile, determinism


def core_op_cases(ops):
    x, m, u, p, e = (randn(3, 2, 5, dtype=torch.float32, seed=k) for k in range(5))
    table2 = randn(7, 2, dtype=torch.float32, seed=9)
    table10 = randn(7, 10, dtype=torch.float32, seed=10)
    c10 = randn(3, 10, dtype=torch.float32, seed=10).contiguous()
    w = randn(7, dtype=torch.float32, seed=11).abs()
    t = torch.tensor([0, 6, 3], device=DEVICE)
    g = randn(3, dtype=torch.float32, seed=12)
    sigma = randn(3, dtype=torch.float32, seed=13).abs()
    return [
        (ops.q_sample, (x.clone().requires_grad_(), e, table2, t, -1, None, True)),
        (ops.diffusion_loss, (m.clone().requires_grad_(), x, w, t, 1)),
        (ops.diffusion_loss, (m.clone().requires_grad_(), x, w, t[1], 0)),
        (ops.q_sample_fwd, (x, e, table2, t, -1, None, False)),
        (ops.q_sample_fwd, (x, None, table2, t[2], 7, None, True)),
        (ops.q_sample_bwd, (x, e, table2, t, True)),
        (ops.q_sample_bwd, (None, e, table2, t, True)),
        (ops.diffusion_loss_fwd, (m, x, w, t, 2)),
        (ops.diffusion_loss_bwd, (g, m, x, w, t, 0)),
        (ops.diffusion_loss_bwd, (g[0], m, x, w, t, 1)),
        (ops.diffusion_step, (x, m, u, p, e, table10, t, 2.0, True, 1.0, False, -1, None, True)),
        (ops.diffusion_step, (x, m, None, None, None, c10, None, 1.0, False, 1.0, True, 3, None, False)),
        (ops.diffusion_sigma_step, (x, m, None, None, sigma + 0.1, sigma * 0.5, None, "euler", "v_prediction",
                                    1.0, True)),
        (ops.diffusion_sigma_step, (x, m, u, p, sigma[0].double() + 0.1, sigma * 0.5, sigma + 1.0, "dpmpp_2m",
                                    "epsilon", 1.5, False)),
    ]


def namespaces():
    return [ns for ns, b in (("sslfast", "native"), ("sslfast_triton", "triton")) if b in BACKENDS]


@pytest.mark.parametrize("namespace", namespaces())
def test_opcheck(namespace):
    ops = getattr(torch.ops, namespace)
    for op, args in core_op_cases(ops):
        torch.library.opcheck(op, args)
    # A key drawn from a generator: each call draws anew, so eager and traced runs differ by design;
    # the schema, autograd registration and fake still get checked.
    x = randn(3, 2, 5, dtype=torch.float32, seed=0)
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    torch.library.opcheck(ops.q_sample_fwd, (x, None, randn(7, 2, dtype=torch.float32, seed=9),
                                             torch.tensor(3, device=DEVICE), -1, gen, False),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_fullgraph_training_step_and_sampling_loop(backend):
    torch._dynamo.reset()
    s = schedule()
    s.set_timesteps(5, "trailing")
    timesteps = s.timesteps
    x0 = randn(2, 3, 4, 4, dtype=torch.float32, seed=1)
    noise = randn(2, 3, 4, 4, dtype=torch.float32, seed=2)
    weight = randn(3, 3, dtype=torch.float32, seed=3)
    t_train = per_sample_t(2, seed=4)

    def model(x, t):  # a tiny "denoiser": channel mix + a timestep-dependent scale
        return torch.einsum("ij,bjhw->bihw", weight, x) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)

    def train_step(x0, w):
        x_t, target = D.q_sample(x0, t_train, s, noise)
        return D.diffusion_loss(model(x_t, t_train) * w, target, t_train, s, snr_gamma=5.0)

    def sample_loop(x):
        for i in range(timesteps.shape[0]):
            t = timesteps[i]
            eps = model(x, t.expand(x.shape[0]))
            x, _ = D.ddim_step(eps, t, x, s, uncond=eps * 0.5, guidance_scale=2.0, clip_sample=True)
        # In-kernel noise under compile: an explicit seed (drawing one from a generator reads it on the host).
        return D.ddpm_step(model(x, timesteps[1].expand(x.shape[0])), timesteps[1], x, s, seed=7)[0]

    with sslfast.use_backend(backend):
        w = torch.tensor(1.5, device=DEVICE, requires_grad=True)
        expected = train_step(x0, w)
        (expected_grad,) = torch.autograd.grad(expected, w)
        got = torch.compile(train_step, fullgraph=True)(x0, w)
        (got_grad,) = torch.autograd.grad(got, w)
        with torch.no_grad():
            want_samples = sample_loop(noise)
            got_samples = torch.compile(sample_loop, fullgraph=True)(noise)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_samples, want_samples, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_fullgraph_euler_and_dpmpp_loop(backend):
    """Sigma-parameterized steps under torch.compile(fullgraph=True): the coefficient op traces
    (no graph break, no host read of a sigma) and gives the eager result."""
    torch._dynamo.reset()
    s = schedule("scaled_linear")
    sig = s.sigmas_for(s.set_timesteps(4, "trailing"))
    x = randn(2, 3, 4, 4, dtype=torch.float32, seed=5)

    def sample_loop(x):
        prev_x0, prev_sigma = None, None
        for i in range(3):  # sigma_next > 0: the second-order update stays finite
            eps = torch.tanh(x) * 0.5
            x = D.euler_step(eps, x, sig[i], sig[i + 1], prediction_type="v_prediction")[0]
            x, prev_x0 = D.dpmpp_2m_step(torch.tanh(x), x, sig[i], sig[i + 1].expand(2), prev_x0, prev_sigma)
            prev_sigma = sig[i]
        return x

    with sslfast.use_backend(backend), torch.no_grad():
        want = sample_loop(x)
        got = torch.compile(sample_loop, fullgraph=True)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_sanitize_every_diffusion_kernel_once(backend):
    """Every diffusion kernel once at odd sizes (one element per sample; a count that is no
    multiple of 4 or of any block): the subset ``make gpu-check`` runs under compute-sanitizer
    (-k sanitize). Covers q_sample (in-kernel and given noise, its backward), the loss forward
    and backward, the step kernel in each variant (guidance, clip, in-kernel / given noise,
    prev_x0, without the x0 output) and the sigma-coefficient kernel of both solvers."""
    s = schedule("scaled_linear")
    s.set_timesteps(10, "trailing")
    sig = s.sigmas_for(s.timesteps)
    for shape in ((1, 1), (3, 5, 7, 9)):
        batch = shape[0]
        x, m, u, p, e = (randn(*shape, dtype=torch.float32, seed=70 + k) for k in range(5))
        t = per_sample_t(batch, seed=75)
        x0 = x.clone().requires_grad_()
        pred = m.clone().requires_grad_()
        with sslfast.use_backend(backend):
            x_t, v = D.q_sample(x0, t, s, seed=11, target="v_prediction")
            x_t_given, _ = D.q_sample(x0, t, s, e)
            loss = D.diffusion_loss(pred, v, t, s, prediction_type="v_prediction", snr_gamma=5.0)
            (loss + x_t.mean() + x_t_given.mean()).backward()
            with torch.no_grad():
                outs = [*D.ddim_step(m, s.timesteps[3], x, s, eta=0.5, seed=3, uncond=u, guidance_scale=2.0,
                                     clip_sample=True),
                        D.ddim_step(m, s.timesteps[3], x, s, return_x0=False)[0],
                        *D.ddpm_step(m, s.timesteps[3], x, s, noise=e, prediction_type="v_prediction"),
                        *D.euler_step(m, x, sig[3], sig[4], uncond=u, guidance_scale=3.0),
                        *D.dpmpp_2m_step(m, x, sig[3].expand(batch), sig[4], p, sig[2]),
                        *D.dpmpp_2m_step(m, x, sig[3], sig[4], prediction_type="sample")]
        assert all(torch.isfinite(o).all() for o in outs)
        assert torch.isfinite(x0.grad).all() and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic(backend):
    shape = (3, 5, 33) if backend == "triton" else (4, 3, 65, 129)
    s = schedule()
    s.set_timesteps(20)
    x, m = randn(*shape, dtype=torch.float32, seed=1), randn(*shape, dtype=torch.float32, seed=2)
    t = per_sample_t(shape[0])

    def run():
        with sslfast.use_backend(backend):
            m_leaf = m.clone().requires_grad_()
            loss = D.diffusion_loss(m_leaf, x, t, s, snr_gamma=5.0)
            loss.backward()
            return (D.q_sample(x, t, s, seed=3), loss, m_leaf.grad,
                    D.ddim_step(m, s.timesteps[4], x, s, eta=1.0, seed=4))

    first, second = run(), run()
    for a, b in zip(torch.utils._pytree.tree_leaves(first), torch.utils._pytree.tree_leaves(second)):
        assert torch.equal(a, b)


@pytest.mark.skipif(DEVICE != "cpu" or "native" not in BACKENDS, reason="CPU thread-count check")
def test_native_loss_independent_of_thread_count():
    s = schedule()
    m, x = randn(3, 70_000, dtype=torch.float32, seed=1), randn(3, 70_000, dtype=torch.float32, seed=2)
    t = per_sample_t(3)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with sslfast.use_backend("native"):
                results.append((D.diffusion_loss(m, x, t, s, reduction="none"), D.q_sample(x, t, s, seed=1)[0]))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert torch.equal(r[0], results[0][0]) and torch.equal(r[1], results[0][1])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_in_gives_nan_out(backend):
    s = schedule()
    s.set_timesteps(10)
    x, m = randn(2, 6, seed=1), randn(2, 6, seed=2)
    x[0, 3] = float("nan")
    m[1, 2] = float("nan")
    t = s.timesteps[3]
    with sslfast.use_backend(backend):
        x_t, _ = D.q_sample(x, per_sample_t(2), s, m)
        prev, x0 = D.ddim_step(m, t, x, s, clip_sample=True)
        loss = D.diffusion_loss(m, x, per_sample_t(2), s, reduction="none")
    assert x_t[0, 3].isnan() and x_t[1, 2].isnan() and x_t[0, 0].isfinite()
    assert prev[0, 3].isnan() and prev[1, 2].isnan() and x0[1, 2].isnan() and prev[0, 0].isfinite()
    assert loss.isnan().all()


def test_bad_input_names_the_argument():
    s = schedule()
    s.set_timesteps(10)
    x = randn(2, 3)
    t = torch.tensor([1, 2], device=DEVICE)
    cases = [
        (lambda: D.NoiseSchedule(10, "cosine"), ValueError, "beta_schedule"),
        (lambda: D.NoiseSchedule(0), ValueError, "num_train_timesteps"),
        (lambda: s.set_timesteps(10, "middle"), ValueError, "spacing"),
        (lambda: s.set_timesteps(0), ValueError, "num_inference_steps"),
        (lambda: D.q_sample(x, torch.tensor([1, 1000], device=DEVICE), s, x), ValueError, "t must be in"),
        (lambda: D.q_sample(x, torch.tensor([-1, 3], device=DEVICE), s, x), ValueError, "got -1"),
        (lambda: D.q_sample(x, torch.tensor([1, 2, 3], device=DEVICE), s, x), ValueError, "t must be a scalar"),
        (lambda: D.q_sample(x, torch.tensor([1.0, 2.0], device=DEVICE), s, x), TypeError, "t must be an integer"),
        (lambda: D.q_sample(x, t, s, randn(2, 4)), ValueError, "noise must have the shape"),
        (lambda: D.q_sample(x, t, s, x.float()), TypeError, "noise must have the dtype"),
        (lambda: D.q_sample(x, t, s, x, target="x0"), ValueError, "target"),
        (lambda: D.q_sample(x, t, "linear", x), TypeError, "schedule"),
        (lambda: D.q_sample(x, t, s, seed=-3), ValueError, "seed"),
        (lambda: D.diffusion_loss(x, x, t, s, prediction_type="eps"), ValueError, "prediction_type"),
        (lambda: D.diffusion_loss(x, x, t, s, snr_gamma=0.0), ValueError, "snr_gamma"),
        (lambda: D.diffusion_loss(x, x, t, s, reduction="max"), ValueError, "reduction"),
        (lambda: D.ddim_step(x, t, x, s, uncond=randn(2, 4)), ValueError, "uncond must have the shape"),
        (lambda: D.ddim_step(x, t, x, s, eta=-1.0), ValueError, "eta"),
        (lambda: D.ddpm_step(x, t, x, s, noise=x, variance_type="learned"), ValueError, "variance_type"),
        (lambda: D.euler_step(x, x, torch.tensor(-1.0, device=DEVICE), torch.tensor(0.0, device=DEVICE)),
         ValueError, "sigma"),
        (lambda: D.dpmpp_2m_step(x, x, 1.0, 0.5, prev_x0=x), ValueError, "sigma_prev"),
        (lambda: D.q_sample([1.0], t, s, x), TypeError, "x0"),
    ]
    for fn, error, text in cases:
        with pytest.raises(error, match=re.escape(text)):
            fn()


def test_return_x0_false_skips_the_second_output():
    s = schedule()
    s.set_timesteps(10)
    x, m = randn(2, 3, seed=1), randn(2, 3, seed=2)
    for backend in BACKENDS:
        with sslfast.use_backend(backend):
            full = D.ddim_step(m, s.timesteps[2], x, s)
            lean = D.ddim_step(m, s.timesteps[2], x, s, return_x0=False)
        assert lean[1] is None and torch.equal(lean[0], full[0])


def test_bench_family_runs_tiny(tmp_path):
    from sslfast.bench import harness

    rc = harness.main(["--only", "diffusion", "--sizes", "tiny", "--device", "cpu", "--no-compile",
                       "--no-progress", "--repeats", "1", "--warmup", "1", "--out", str(tmp_path)])
    assert rc == 0
    import json
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert {r["op"] for r in records} == {"q_sample+loss", "ddim_step", "ddpm_step", "euler_step", "dpmpp_2m_step"}
    for r in records:
        assert r["impls"]["sslfast"]["error"] is None and r["impls"]["eager"]["error"] is None, r
        assert r["impls"]["sslfast"]["gbps"] > 0


def test_explicit_prev_t_equals_the_cached_default():
    s = schedule()
    s.set_timesteps(25, "trailing")
    x, m = randn(3, 4, 5, seed=1), randn(3, 4, 5, seed=2)
    t = per_sample_t(3, seed=5)
    for backend in BACKENDS:
        with sslfast.use_backend(backend):
            a = D.ddim_step(m, t, x, s, eta=0.3, noise=m)
            b = D.ddim_step(m, t, x, s, eta=0.3, noise=m, prev_t=t - s.step_ratio)
            c = D.ddpm_step(m, t, x, s, noise=m)
            d = D.ddpm_step(m, t, x, s, noise=m, prev_t=t - s.step_ratio)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, d, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("target", ["epsilon", "v_prediction"])
def test_q_sample_gradcheck(backend, target):
    s = schedule()
    shape = (2, 3) if backend == "triton" else (3, 2, 5)  # each gradcheck probe is a launch
    t = per_sample_t(shape[0], seed=2)
    x0 = randn(*shape, seed=1).requires_grad_()
    noise = randn(*shape, seed=3)
    with sslfast.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a: D.q_sample(a, t, s, noise, target=target), (x0,))
        assert torch.autograd.gradcheck(lambda a: D.q_sample(a, t, s, seed=11, target=target), (x0,))


@pytest.mark.parametrize("seed", [5, 2 ** 31 + 5, 2 ** 32 - 1, 2 ** 62 - 1, 2 ** 63 - 1])
def test_every_seed_word_works_on_every_backend(seed):
    """Regression: Philox keys whose 32-bit words are >= 2^31 reached the Triton kernels as int64
    and failed to compile (half of all generator-drawn seeds). Every backend draws the same noise."""
    s = D.NoiseSchedule(1000, device=DEVICE)
    s.set_timesteps(5)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    t = torch.tensor([3, 700], device=DEVICE)
    got = {}
    for backend in BACKENDS:
        with sslfast.use_backend(backend):
            got[backend] = (D.q_sample(x, t, s, seed=seed)[0], D.ddpm_step(x, s.timesteps[1], x, s, seed=seed)[0])
    for backend, (x_t, prev) in got.items():
        torch.testing.assert_close(x_t, got["reference"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prev, got["reference"][1], rtol=1e-5, atol=1e-5)
