"""sslfast.diffusion's schedulers against diffusers' own: the same config gives the same samples.

Every loop runs both schedulers from the same noise with a fixed fake model (a linear function
of the sample and t), the same generator seed where a step draws noise, and compares each step's
prev_sample and pred_original_sample. Then the pipelines: DDPMPipeline / DDIMPipeline with a tiny
random UNet2DModel give the same images with either scheduler. Bad configs raise naming the key.
Run with ``-s`` to see the max abs differences."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from sslfast import _dispatch  # noqa: E402
from sslfast import diffusion as D  # noqa: E402

SHAPE = (2, 3, 8, 8)
NAMES = ("DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler")


def pair(name, **config):
    """(diffusers' scheduler, ours from its config)."""
    theirs = getattr(diffusers, name)(**config)
    return theirs, getattr(D, name).from_config(theirs.config)


def fake_model(x, t, total=1000):
    """A fixed linear function of the sample and the timestep (float timesteps for Euler)."""
    c = torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).reshape(x.shape[1:])
    return 0.6 * x + (torch.as_tensor(t, dtype=x.dtype) / total) * c


def run(scheduler, steps, seed=0, step_kwargs=None, generator_seed=None, noise_seed=1):
    """A whole sampling loop; returns the per-step (prev_sample, pred_original_sample)."""
    scheduler.set_timesteps(steps)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(noise_seed)) * scheduler.init_noise_sigma
    g = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None
    outs = []
    for t in scheduler.timesteps:
        m = fake_model(scheduler.scale_model_input(x, t), t, scheduler.config.num_train_timesteps)
        kwargs = dict(step_kwargs or {})
        if g is not None:
            kwargs["generator"] = g
        out = scheduler.step(m, t, x, **kwargs)
        x = out.prev_sample
        outs.append((out.prev_sample, getattr(out, "pred_original_sample", None)))
    return outs


def max_err(ours, theirs, label):
    """Max abs difference over every step's outputs, relative to the reference's scale beyond 1."""
    err, scale = 0.0, 1.0
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            if x is None or y is None:
                continue
            assert x.shape == y.shape and torch.isfinite(x).all(), label
            err = max(err, float((x.double() - y.double()).abs().max()))
            scale = max(scale, float(y.abs().max()))
    assert len(ours) == len(theirs)
    print(f"[parity] {label}: max abs diff {err:.2e} (scale {scale:.1f})")
    return err / scale


def compare_loops(name, config, steps=10, tol=2e-5, **kw):
    theirs, ours = pair(name, **config)
    a, b = run(ours, steps, **kw), run(theirs, steps, **kw)
    # Karras timesteps interpolate log sigma: diffusers' float32 tables move them by ~1e-5 relative.
    assert torch.allclose(ours.timesteps.double(), theirs.timesteps.double(), rtol=1e-4, atol=1e-3)
    if hasattr(theirs, "sigmas"):
        assert torch.allclose(ours.sigmas.double(), theirs.sigmas.double(), rtol=1e-3)  # float32 tables there
    label = f"{name} {config} steps={steps} {kw}"
    assert max_err(a, b, label) < tol, label


def test_fused_ops_run_here():
    """The loops below go through the fused kernels where this build has them."""
    print("[parity] backends:", _dispatch.backend_name("diffusion_step", "cpu"),
          _dispatch.backend_name("diffusion_sigma_step", "cpu"), _dispatch.backend_name("q_sample", "cpu"))


# ------------------------------------------------------------------------------------ DDPM


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddpm_loop(prediction_type, spacing):
    clip = prediction_type != "epsilon"
    compare_loops("DDPMScheduler", {"prediction_type": prediction_type, "timestep_spacing": spacing,
                                    "clip_sample": clip}, steps=10, generator_seed=3)


@pytest.mark.parametrize("config,steps", [
    ({"variance_type": "fixed_large"}, 10),
    ({"variance_type": "fixed_small_log", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012}, 10),
    ({"timestep_spacing": "trailing", "clip_sample": False}, 7),           # uneven gaps: prev from the list
    ({"steps_offset": 1, "clip_sample_range": 2.0}, 10),
    ({"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}, 10),
    ({"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 10),
    ({"num_train_timesteps": 100, "trained_betas": list(np.linspace(1e-3, 0.05, 100))}, 100),
])
def test_ddpm_options(config, steps):
    compare_loops("DDPMScheduler", config, steps=steps, generator_seed=5)


def test_ddpm_custom_timesteps_and_no_set_timesteps():
    theirs, ours = pair("DDPMScheduler")
    for s in (theirs, ours):
        s.set_timesteps(timesteps=[900, 640, 300, 120, 7, 0])
    a, b = [], []
    for s, outs in ((ours, a), (theirs, b)):
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        for t in s.timesteps:
            out = s.step(fake_model(x, t), t, x, generator=g)
            x = out.prev_sample
            outs.append((out.prev_sample, out.pred_original_sample))
    assert max_err(a, b, "DDPM custom timesteps") < 2e-5
    # Without set_timesteps diffusers steps from t to t - 1.
    theirs, ours = pair("DDPMScheduler")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    got = ours.step(fake_model(x, 500), 500, x, generator=torch.Generator().manual_seed(2))
    want = theirs.step(fake_model(x, 500), 500, x, generator=torch.Generator().manual_seed(2))
    assert max_err([got.to_tuple()], [want.to_tuple()], "DDPM t -> t - 1") < 2e-5
    # A list of generators (one per sample) draws row by row, as diffusers' randn_tensor.
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    got = ours.step(fake_model(x, 500), 500, x, generator=gens)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    want = theirs.step(fake_model(x, 500), 500, x, generator=gens)
    assert max_err([got.to_tuple()], [want.to_tuple()], "DDPM list of generators") < 2e-5


# ------------------------------------------------------------------------------------ DDIM


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_loop(prediction_type, spacing):
    compare_loops("DDIMScheduler", {"prediction_type": prediction_type, "timestep_spacing": spacing,
                                    "set_alpha_to_one": spacing != "leading", "clip_sample": spacing != "linspace"},
                  steps=10)


@pytest.mark.parametrize("config,step_kwargs", [
    ({"clip_sample": True}, {"eta": 0.5}),
    ({"clip_sample": True, "set_alpha_to_one": False}, {"eta": 1.0, "use_clipped_model_output": True}),
    ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
      "steps_offset": 1}, {"eta": 0.3}),
    ({"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
      "clip_sample": False}, {}),
    ({"clip_sample": True, "clip_sample_range": 0.5, "prediction_type": "sample"},
     {"use_clipped_model_output": True}),
])
def test_ddim_options(config, step_kwargs):
    compare_loops("DDIMScheduler", config, steps=10, step_kwargs=step_kwargs,
                  generator_seed=7 if step_kwargs.get("eta", 0) > 0 else None)


def test_ddim_variance_noise_and_tuple_output():
    theirs, ours = pair("DDIMScheduler")
    for s in (theirs, ours):
        s.set_timesteps(10)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    t = ours.timesteps[3]
    got = ours.step(fake_model(x, t), t, x, eta=0.8, variance_noise=noise, return_dict=False)
    want = theirs.step(fake_model(x, t), t, x, eta=0.8, variance_noise=noise, return_dict=False)
    assert isinstance(got, tuple) and len(got) == 2
    assert max_err([got], [want], "DDIM variance_noise") < 2e-5
    with pytest.raises(ValueError, match="generator"):
        ours.step(fake_model(x, t), t, x, eta=0.8, variance_noise=noise, generator=torch.Generator())


# ------------------------------------------------------------------------------------ Euler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_euler_loop(prediction_type, spacing):
    compare_loops("EulerDiscreteScheduler", {"prediction_type": prediction_type, "timestep_spacing": spacing,
                                             "steps_offset": 1 if spacing == "leading" else 0}, steps=10)


@pytest.mark.parametrize("config,step_kwargs", [
    ({"use_karras_sigmas": True}, {}),
    ({"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0, "prediction_type": "v_prediction"}, {}),
    ({"final_sigmas_type": "sigma_min", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012}, {}),
    ({"timestep_type": "continuous", "prediction_type": "v_prediction"}, {}),
    ({"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, {}),
    ({}, {"s_churn": 2.0, "s_tmin": 0.5, "s_tmax": 5.0, "s_noise": 1.003}),
    ({"prediction_type": "sample"}, {"s_churn": 1.0}),
])
def test_euler_options(config, step_kwargs):
    compare_loops("EulerDiscreteScheduler", config, steps=12, step_kwargs=step_kwargs,
                  generator_seed=9 if step_kwargs else None)


def test_euler_churn_with_v_prediction_is_rejected():
    _, ours = pair("EulerDiscreteScheduler", prediction_type="v_prediction")
    ours.set_timesteps(5)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="s_churn"):
        ours.step(x, ours.timesteps[0], x, s_churn=1.0)
    with pytest.raises(ValueError, match="integer"):
        ours.step(x, 3, x)


# ------------------------------------------------------------------------------------ DPM-Solver++


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_dpmpp_loop(prediction_type, spacing):
    compare_loops("DPMSolverMultistepScheduler", {"prediction_type": prediction_type, "timestep_spacing": spacing},
                  steps=10)


@pytest.mark.parametrize("config,steps", [
    ({"use_karras_sigmas": True}, 10),
    ({"use_karras_sigmas": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, 15),
    ({"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, 10),
    ({"solver_order": 1}, 8),
    ({"lower_order_final": False, "final_sigmas_type": "sigma_min"}, 8),
    ({"final_sigmas_type": "sigma_min"}, 20),
    ({"final_sigmas_type": "sigma_min", "euler_at_final": True}, 20),
    ({"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 10),
    ({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
      "timestep_spacing": "leading"}, 25),
])
def test_dpmpp_options(config, steps):
    compare_loops("DPMSolverMultistepScheduler", config, steps=steps)


def test_dpmpp_tuple_output_and_no_set_timesteps():
    _, ours = pair("DPMSolverMultistepScheduler")
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="set_timesteps"):
        ours.step(x, 999, x)
    ours.set_timesteps(4)
    out = ours.step(x, ours.timesteps[0], x, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1  # diffusers' tuple: (prev_sample,)


# ------------------------------------------------------------------------------------ add_noise, config


@pytest.mark.parametrize("name", NAMES)
def test_add_noise(name):
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    theirs, ours = pair(name, **config)
    for s in (theirs, ours):
        s.set_timesteps(10)
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    t = ours.timesteps[[2, 7]]
    got, want = ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t)
    if name in ("DDPMScheduler", "DDIMScheduler"):  # int32 timesteps too
        assert torch.allclose(ours.add_noise(x0, noise, t.int()), got)
    assert max_err([(got,)], [(want,)], f"{name}.add_noise") < 2e-6
    if name in ("DDPMScheduler", "DDIMScheduler"):
        got, want = ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t)
        assert max_err([(got,)], [(want,)], f"{name}.get_velocity") < 2e-6


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    theirs = getattr(diffusers, name)(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                      prediction_type="v_prediction")
    ours = getattr(D, name).from_config(theirs.config)
    assert ours.config.prediction_type == "v_prediction" and ours.config["beta_end"] == 0.012
    assert {k: v for k, v in theirs.config.items() if not k.startswith("_")} == dict(ours.config)
    back = getattr(diffusers, name).from_config(ours.config)
    assert {k: v for k, v in back.config.items() if not k.startswith("_")} == dict(ours.config)
    assert ours.order == theirs.order and len(ours) == len(theirs)
    with pytest.raises(TypeError):
        ours.config["prediction_type"] = "epsilon"
    # Another scheduler's config: its keys that this class does not have are ignored, as in diffusers.
    other = diffusers.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    skip_prk_steps=True, steps_offset=1)
    converted = getattr(D, name).from_config(other.config, timestep_spacing="trailing")
    assert converted.config.steps_offset == 1 and converted.config.timestep_spacing == "trailing"
    _, unused = getattr(D, name).from_config(other.config, return_unused_kwargs=True)
    assert "skip_prk_steps" in unused


@pytest.mark.parametrize("name,key,value", [
    ("DDPMScheduler", "thresholding", True),
    ("DDPMScheduler", "variance_type", "learned_range"),
    ("DDPMScheduler", "beta_schedule", "sigmoid"),
    ("DDIMScheduler", "thresholding", True),
    ("DDIMScheduler", "timestep_spacing", "sideways"),
    ("DDIMScheduler", "prediction_type", "flow_prediction"),
    ("DDIMScheduler", "clip_sample", "yes"),
    ("EulerDiscreteScheduler", "interpolation_type", "log_linear"),
    ("EulerDiscreteScheduler", "use_exponential_sigmas", True),
    ("EulerDiscreteScheduler", "use_beta_sigmas", True),
    ("EulerDiscreteScheduler", "final_sigmas_type", "one"),
    ("DPMSolverMultistepScheduler", "algorithm_type", "sde-dpmsolver++"),
    ("DPMSolverMultistepScheduler", "solver_order", 3),
    ("DPMSolverMultistepScheduler", "solver_type", "heun"),
    ("DPMSolverMultistepScheduler", "use_lu_lambdas", True),
    ("DPMSolverMultistepScheduler", "use_flow_sigmas", True),
    ("DPMSolverMultistepScheduler", "variance_type", "learned_range"),
    ("DPMSolverMultistepScheduler", "use_dynamic_shifting", True),
    ("DPMSolverMultistepScheduler", "thresholding", True),
    ("DPMSolverMultistepScheduler", "trained_betas", [0.1, 0.2]),
])
def test_bad_config_names_the_key(name, key, value):
    cls = getattr(D, name)
    with pytest.raises((ValueError, TypeError), match=key):
        cls.from_config({**cls.OPTIONS, "_class_name": name, key: value})
    with pytest.raises((ValueError, TypeError), match=key):
        cls(**{key: value})


def test_bad_arguments():
    with pytest.raises(TypeError, match="num_train_steps"):
        D.DDIMScheduler(num_train_steps=10)
    s = D.DDIMScheduler()
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(2000)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(SHAPE), 10, torch.zeros(SHAPE))
    s.set_timesteps(10)
    with pytest.raises(TypeError, match="timestep"):
        s.step(torch.zeros(SHAPE), 10.5, torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="eta"):
        s.step(torch.zeros(SHAPE), 10, torch.zeros(SHAPE), eta=-1.0)
    with pytest.raises(ValueError, match="sigmas"):
        D.EulerDiscreteScheduler().set_timesteps(sigmas=[3.0, 1.0, 0.0])


# ------------------------------------------------------------------------------------ pipelines


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("pipeline,kwargs", [
    ("DDPMPipeline", {}),
    ("DDIMPipeline", {}),
    ("DDIMPipeline", {"eta": 0.7}),
])
def test_pipeline_same_images(pipeline, kwargs):
    unet = tiny_unet()
    name = pipeline.replace("Pipeline", "Scheduler")
    pipe = getattr(diffusers, pipeline)(unet=unet, scheduler=getattr(diffusers, name)())
    pipe.set_progress_bar_config(disable=True)

    def images():
        return pipe(batch_size=2, generator=torch.Generator().manual_seed(42), num_inference_steps=10,
                    output_type="np", **kwargs).images

    with torch.no_grad():
        want = images()
        pipe.scheduler = getattr(D, name).from_config(pipe.scheduler.config)
        assert type(pipe.scheduler).__module__ == "sslfast.schedulers"
        got = images()
    err = float(np.abs(got - want).max())
    print(f"[parity] {pipeline} {kwargs}: images max abs diff {err:.2e}")
    assert got.shape == want.shape == (2, 8, 8, 3)
    assert err < 1e-4
