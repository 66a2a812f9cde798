"""Diffusion family, what is particular to it: schedule tables, timesteps and sigmas vs diffusers'
formulas (written here), the min-SNR formula, in-kernel Philox noise (statistics, Triton's stream,
every seed word), per-sample sigmas, guidance rescale, compiled sampling loops, thread counts,
prev_t and return_x0, the bench. The contract every op keeps (parity with the float64 reference,
gradcheck, opcheck, compile, determinism, NaN, bad input): test_contract.py."""

import math
import re

import numpy as np
import pytest
import torch

import sslfast
from sslfast import diffusion as D
from sslfast.reference import diffusion as reference

from helpers import (DEVICE, FLOORS, assert_within_eager_error, fast_backends, per_sample_t, randn,
                     runnable_backends, schedule)

BACKENDS = runnable_backends(torch.device(DEVICE).type, "q_sample")
FAST_BACKENDS = fast_backends("q_sample")


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


# ------------------------------------------------------------------------ min-SNR weights


def test_min_snr_weights_formula():
    s = schedule()
    t = torch.tensor([0, 10, 500, 999], device=DEVICE)
    snr = s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t])
    torch.testing.assert_close(reference.snr_weights(t, s, "epsilon", 5.0), torch.clamp(snr, max=5.0) / snr)
    torch.testing.assert_close(reference.snr_weights(t, s, "v_prediction", 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


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


# ------------------------------------------------------------------------ compile, thread counts, bad input


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_compile_fullgraph_sampling_loop(backend):
    """A whole DDIM loop (guidance, clipping) and a DDPM step with in-kernel noise, compiled as one
    graph with a model: the eager samples. One step of each op compiles in test_contract.py."""
    torch._dynamo.reset()
    s = schedule()
    s.set_timesteps(5, "trailing")
    timesteps = s.timesteps
    noise = randn(2, 3, 4, 4, dtype=torch.float32, seed=2)
    weight = randn(3, 3, dtype=torch.float32, seed=3)

    def model(x, t):  # a tiny "denoiser": channel mix + a timestep-dependent scale
        return torch.einsum("ij,bjhw->bihw", weight, x) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)

    def sample_loop(x):
        for i in range(timesteps.shape[0]):
            t = timesteps[i]
            eps = model(x, t.expand(x.shape[0]))
            x, _ = D.ddim_step(eps, t, x, s, uncond=eps * 0.5, guidance_scale=2.0, clip_sample=True)
        # In-kernel noise under compile: an explicit seed (drawing one from a generator reads it on the host).
        return D.ddpm_step(model(x, timesteps[1].expand(x.shape[0])), timesteps[1], x, s, seed=7)[0]

    with sslfast.use_backend(backend), torch.no_grad():
        want_samples = sample_loop(noise)
        got_samples = torch.compile(sample_loop, fullgraph=True)(noise)
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


def test_schedule_bad_input():
    """NoiseSchedule and set_timesteps name the bad argument; the ops' bad inputs: test_contract.py."""
    s = schedule()
    cases = [
        (lambda: D.NoiseSchedule(10, "cosine"), ValueError, "beta_schedule"),
        (lambda: D.NoiseSchedule(0), ValueError, "num_train_timesteps"),
        (lambda: s.set_timesteps(10, "middle"), ValueError, "spacing"),
        (lambda: s.set_timesteps(0), ValueError, "num_inference_steps"),
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
    from sslfast.bench import diffusion as bench
    schedulers = {"scheduler_ddim_step", "scheduler_dpmpp_2m_loop4"} if bench.diffusers is not None else set()
    assert {r["op"] for r in records} == {"q_sample+loss", "ddim_step", "ddpm_step", "euler_step",
                                          "dpmpp_2m_step"} | schedulers
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
