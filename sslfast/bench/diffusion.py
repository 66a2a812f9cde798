"""Benchmark cases of the diffusion family: q_sample + min-SNR loss (fwd, fwd+bwd) and one
sampler step of each kind (DDIM, DDPM, Euler, DPM-Solver++ 2M), sslfast vs the eager reference
vs torch.compile of it.

The eager / compile baselines draw their noise with ``torch.randn_like`` (as a diffusers training
loop does); sslfast draws it inside the kernel. Byte model (what the fused kernels must move,
per element, fp32 = 4 bytes): q_sample + loss forward reads x0, writes x_t and the target, reads
prediction + target (5 x 4); backward reads prediction + target and writes the gradient (+3 x 4).
DDIM / Euler step: read sample + model output, write prev_sample (3 x 4); DDPM with in-kernel
noise the same; DPM-Solver++ 2M also reads the previous x0 and writes this x0 (5 x 4).

Scheduler rows (``scheduler_*``): ``sslfast.diffusion.<X>Scheduler.step`` against diffusers' own
``<X>Scheduler.step`` (the ``eager`` column; ``compile`` is torch.compile of it) from the same
config and inputs, one step and a whole N-step loop with a trivial model (0.5 x). One torch
thread, thread CPU clock. Both DDPM sides draw the variance noise with torch.randn (diffusers'
way; the sslfast scheduler hands it to the fused step): 4 B/elt more to write and read.
Skipped when diffusers is not installed.
"""

from __future__ import annotations

import torch

from sslfast import diffusion as D
from sslfast.reference import diffusion as reference

from .harness import Case, Context, Inputs, backend_of, register_family

try:
    import diffusers
except ImportError:  # the scheduler rows compare with diffusers: without it they are left out
    diffusers = None

FAMILY = "diffusion"
SEED = 4321
MODEL_NOTE = ("diffusion: GB/s against the bytes the fused kernels move (q_sample+loss 20 B/elt fwd, "
              "32 B/elt fwd+bwd; DDIM/DDPM/Euler step 12 B/elt; DPM++ 2M 20 B/elt, fp32)")


def _randn(shape, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)



def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _label(shape):
    return f"B={shape[0]} {'x'.join(str(s) for s in shape[1:])}"


def train_case(shape, *, snr_gamma=5.0, headline=False) -> Case:
    """q_sample (noise drawn per call) + min-SNR-weighted MSE on a prediction tensor."""
    schedules = {}

    def schedule(device):
        if device not in schedules:
            schedules[device] = D.NoiseSchedule(1000, device=device)
        return schedules[device]

    def make_inputs(device, dtype, requires_grad):
        x0 = _randn(shape, device, dtype, SEED)
        pred = _randn(shape, device, dtype, SEED + 1).requires_grad_(requires_grad)
        g = torch.Generator().manual_seed(SEED + 2)
        t = torch.randint(0, 1000, (shape[0],), generator=g).to(device)
        return Inputs((x0, pred, t, schedule(device)), {}, [pred] if requires_grad else [])

    def fused(x0, pred, t, s):
        x_t, target = D.q_sample(x0, t, s)
        return D.diffusion_loss(pred, target, t, s, snr_gamma=snr_gamma), x_t

    def eager(x0, pred, t, s):
        x_t, target = reference.q_sample(x0, t, s, torch.randn_like(x0))
        return reference.diffusion_loss(pred, target, t, s, snr_gamma=snr_gamma), x_t

    n = _numel(shape)
    return Case(FAMILY, "q_sample+loss", _label(shape), {"shape": list(shape)}, make_inputs, fused, eager,
                bytes=lambda mode: (20 if mode == "fwd" else 32) * n, backend=backend_of("q_sample"),
                headline=headline, cost=n / 1e5, model_note=MODEL_NOTE)


def step_case(kind, shape) -> Case:
    """One sampler step at a mid-trajectory timestep (50-step schedule), epsilon prediction."""
    schedules = {}

    def schedule(device):
        if device not in schedules:
            s = D.NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012, device=device)
            s.set_timesteps(50, "leading")
            schedules[device] = s
        return schedules[device]

    def make_inputs(device, dtype, requires_grad):
        s = schedule(device)
        x = _randn(shape, device, dtype, SEED + 10)
        m = _randn(shape, device, dtype, SEED + 11)
        args = [m, x, s.timesteps[20], s]
        if kind in ("euler", "dpmpp_2m"):
            sig = s.sigmas_for(s.timesteps)
            args = [m, x, sig[20], sig[21], sig[19], _randn(shape, device, dtype, SEED + 12)]
        return Inputs(tuple(args), {}, [])

    if kind == "ddim":
        def fused(m, x, t, s):
            return D.ddim_step(m, t, x, s, clip_sample=True, return_x0=False)[0]

        def eager(m, x, t, s):
            return reference.ddim_step(m, t, x, s, t - s.step_ratio, clip_sample=True)[0]
        per_elt = 12
    elif kind == "ddpm":
        def fused(m, x, t, s):
            return D.ddpm_step(m, t, x, s, return_x0=False)[0]

        def eager(m, x, t, s):
            return reference.ddpm_step(m, t, x, s, t - s.step_ratio, noise=torch.randn_like(x))[0]
        per_elt = 12
    elif kind == "euler":
        def fused(m, x, sigma, sigma_next, sigma_prev, prev_x0):
            return D.euler_step(m, x, sigma, sigma_next, return_x0=False)[0]

        def eager(m, x, sigma, sigma_next, sigma_prev, prev_x0):
            return reference.euler_step(m, x, sigma, sigma_next)[0]
        per_elt = 12
    else:
        def fused(m, x, sigma, sigma_next, sigma_prev, prev_x0):
            return D.dpmpp_2m_step(m, x, sigma, sigma_next, prev_x0, sigma_prev)

        def eager(m, x, sigma, sigma_next, sigma_prev, prev_x0):
            return reference.dpmpp_2m_step(m, x, sigma, sigma_next, prev_x0, sigma_prev)
        per_elt = 20

    n = _numel(shape)
    return Case(FAMILY, f"{kind}_step", _label(shape), {"shape": list(shape)}, make_inputs, fused, eager,
                bytes=lambda mode: per_elt * n, modes=("fwd",),
                backend=backend_of("diffusion_step" if kind in ("ddim", "ddpm") else "diffusion_sigma_step"),
                cost=n / 3e5, model_note=MODEL_NOTE)


STEPS = ("ddim", "ddpm", "euler", "dpmpp_2m")

SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
              "dpmpp_2m": "DPMSolverMultistepScheduler"}
# Stable Diffusion's schedule; clip_sample as latent diffusion (the DDPM / DDIM defaults clip).
SCHEDULER_CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SCHEDULER_BYTES = {"ddim": 12, "ddpm": 20, "euler": 12, "dpmpp_2m": 20}


def _scheduler_pair(kind, steps):
    """(sslfast scheduler, diffusers scheduler) from one diffusers config, timesteps set."""
    theirs = getattr(diffusers, SCHEDULERS[kind])(**SCHEDULER_CONFIG)
    ours = getattr(D, SCHEDULERS[kind]).from_config(theirs.config)
    for s in (ours, theirs):
        s.set_timesteps(steps)
    return ours, theirs


def _at_step(s, i, prev_x0):
    """Put a scheduler at step ``i`` of its loop (the same attributes on both sides): Euler / DPM
    keep a step index, DPM-Solver++ the previous x0 (second order from the second step on)."""
    if hasattr(s, "_step_index"):
        s._step_index = i
    if hasattr(s, "lower_order_nums"):
        s.lower_order_nums = 1
        s.model_outputs = [None, prev_x0]


def scheduler_step_case(kind, shape, steps=50, index=20) -> Case:
    """One scheduler.step at step ``index`` of a ``steps``-step schedule, epsilon prediction."""
    pairs = {}

    def make_inputs(device, dtype, requires_grad):
        if device not in pairs:
            pairs[device] = _scheduler_pair(kind, steps)
        ours, theirs = pairs[device]
        x = _randn(shape, device, dtype, SEED + 20)
        m = _randn(shape, device, dtype, SEED + 21)
        prev_x0 = _randn(shape, device, dtype, SEED + 22)
        t = ours.timesteps[index].to(device)
        return Inputs((m, t, x, prev_x0, ours, theirs), {}, [])

    def fused(m, t, x, prev_x0, ours, theirs):
        _at_step(ours, index, prev_x0)
        return ours.step(m, t, x).prev_sample

    def eager(m, t, x, prev_x0, ours, theirs):
        _at_step(theirs, index, prev_x0)
        return theirs.step(m, t, x).prev_sample

    n = _numel(shape)
    return Case(FAMILY, f"scheduler_{kind}_step", _label(shape), {"shape": list(shape), "vs": "diffusers"},
                make_inputs, fused, eager, bytes=lambda mode: SCHEDULER_BYTES[kind] * n, modes=("fwd",),
                backend=backend_of("diffusion_step" if kind in ("ddim", "ddpm") else "diffusion_sigma_step"),
                cost=n / 3e5, model_note=MODEL_NOTE, threads=1, cpu_clock="thread")


def scheduler_loop_case(kind, shape, steps=20) -> Case:
    """A whole ``steps``-step sampling loop (set_timesteps, scale_model_input, step) with the
    model 0.5 x: the scheduler's share of sampling, host work included."""
    pairs = {}

    def make_inputs(device, dtype, requires_grad):
        if device not in pairs:
            pairs[device] = _scheduler_pair(kind, steps)
        ours, theirs = pairs[device]
        return Inputs((_randn(shape, device, dtype, SEED + 30), ours, theirs), {}, [])

    def loop(s, noise):
        s.set_timesteps(steps)
        x = noise * s.init_noise_sigma
        for t in s.timesteps:
            x = s.step(0.5 * s.scale_model_input(x, t), t, x).prev_sample
        return x

    def fused(noise, ours, theirs):
        return loop(ours, noise)

    def eager(noise, ours, theirs):
        return loop(theirs, noise)

    n = _numel(shape)
    return Case(FAMILY, f"scheduler_{kind}_loop{steps}", _label(shape), {"shape": list(shape), "steps": steps,
                                                                        "vs": "diffusers"},
                make_inputs, fused, eager, bytes=lambda mode: steps * SCHEDULER_BYTES[kind] * n, modes=("fwd",),
                backend=backend_of("diffusion_step" if kind in ("ddim", "ddpm") else "diffusion_sigma_step"),
                cost=steps * n / 3e5, model_note=MODEL_NOTE, threads=1, cpu_clock="thread")


def scheduler_cases(sizes):
    """The scheduler-vs-diffusers rows; none without diffusers."""
    if diffusers is None:
        return []
    if sizes == "tiny":
        return [scheduler_step_case("ddim", (2, 4, 8, 8)), scheduler_loop_case("dpmpp_2m", (2, 4, 8, 8), steps=4)]
    steps = [scheduler_step_case(k, (16, 4, 64, 64)) for k in STEPS]
    loops = [scheduler_loop_case(k, (4, 4, 64, 64)) for k in STEPS]
    if sizes == "quick":
        return steps[:1] + loops[:1]
    return steps + loops


@register_family(FAMILY)
def cases(ctx: Context) -> list:
    if ctx.sizes == "tiny":
        return [train_case((2, 3, 8, 8)), *[step_case(k, (2, 4, 8, 8)) for k in STEPS], *scheduler_cases("tiny")]
    if ctx.device.type == "cuda":
        train = [train_case((64, 4, 64, 64)), train_case((64, 3, 64, 64), headline=True),
                 train_case((256, 3, 256, 256))]
        steps = [step_case(k, shape) for k in STEPS for shape in ((64, 4, 64, 64), (256, 4, 128, 128))]
        if ctx.sizes == "quick":
            return train[:2] + [step_case(k, (64, 4, 64, 64)) for k in STEPS]
        return train + steps + scheduler_cases(ctx.sizes)
    # CPU: the targets (B = 64, 3x64x64 and 4x64x64); the full run stays ~3 minutes.
    if ctx.sizes == "quick":
        return ([train_case((64, 3, 64, 64), headline=True), step_case("ddim", (64, 4, 64, 64))]
                + scheduler_cases("quick"))
    return ([train_case((64, 3, 64, 64), headline=True), train_case((64, 4, 64, 64))]
            + [step_case(k, (64, 4, 64, 64)) for k in STEPS] + scheduler_cases("full"))
