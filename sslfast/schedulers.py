"""Schedulers with diffusers' interface (DDPM, DDIM, Euler, DPM-Solver++ 2M) on the fused steps.

    pipe.scheduler = sslfast.diffusion.DDIMScheduler.from_config(pipe.scheduler.config)

Each class takes the config of the diffusers scheduler of the same name (``from_config`` also
accepts another scheduler's config: keys the class does not have are ignored, as in diffusers)
and keeps diffusers' attributes and call signatures: ``config``, ``order``, ``timesteps``,
``init_noise_sigma``, ``num_inference_steps``, ``set_timesteps``, ``scale_model_input``,
``add_noise``, ``step``. The arithmetic of ``step`` is one call of the fused op
(``sslfast.ops.diffusion``: ddpm_step / ddim_step / euler_step / dpmpp_2m_step); ``add_noise``
of DDPM / DDIM is ``q_sample``. Host-side work is what diffusers also does on the host: timestep
tables in ``set_timesteps``, the step index, and the ``t > 0`` test of DDPM.

Noise (DDPM's variance, DDIM with eta > 0, Euler with s_churn > 0) is drawn as diffusers'
``randn_tensor`` draws it and handed to the fused step, so a seeded generator (or the global
seed) gives diffusers' images. An option the fused steps cannot reproduce exactly raises a
ValueError naming it rather than sampling something else (``UNSUPPORTED`` per class).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .ops import _validate as check
from .ops import diffusion as ops

__all__ = ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
           "SchedulerOutput"]

SPACINGS = ("leading", "trailing", "linspace")


class FrozenConfig(dict):
    """The config: a read-only dict with attribute access, like diffusers' FrozenDict (pipelines
    read ``scheduler.config.num_train_timesteps`` and pass the dict to ``from_config``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _frozen(self, *args, **kwargs):
        raise TypeError("the scheduler config is read-only: make a new scheduler with from_config(config, key=value)")

    __setitem__ = __delitem__ = __setattr__ = update = pop = popitem = setdefault = clear = _frozen

    def __reduce__(self):  # copy / deepcopy / pickle without the blocked __setitem__
        return (FrozenConfig, (dict(self),))


class SchedulerOutput:
    """``prev_sample`` and ``pred_original_sample``; indexable like diffusers' BaseOutput."""

    def __init__(self, prev_sample, pred_original_sample=None):
        self.prev_sample = prev_sample
        self.pred_original_sample = pred_original_sample

    def to_tuple(self):
        return tuple(v for v in (self.prev_sample, self.pred_original_sample) if v is not None)

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __repr__(self):
        return f"SchedulerOutput(prev_sample={tuple(self.prev_sample.shape)})"


def randn_tensor(shape, generator=None, device=None, dtype=None):
    """Normal noise drawn as diffusers.utils.torch_utils.randn_tensor: with a CPU generator for
    another device, drawn on the CPU and moved; with a list of generators, one row per generator."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    rand_device = device
    if generator is not None:
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        if not isinstance(first, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(first).__name__}")
        if first.device.type != device.type:
            if first.device.type != "cpu":
                raise ValueError(f"generator is on {first.device} but the sample is on {device}")
            rand_device = torch.device("cpu")
    if isinstance(generator, (list, tuple)):
        if len(generator) == 1:
            generator = generator[0]
        elif len(generator) != shape[0]:
            raise ValueError(f"generator: a list needs one generator per sample ({shape[0]}), got {len(generator)}")
    if isinstance(generator, (list, tuple)):
        rows = [torch.randn((1,) + tuple(shape[1:]), generator=g, device=rand_device, dtype=dtype) for g in generator]
        return torch.cat(rows, dim=0).to(device)
    return torch.randn(tuple(shape), generator=generator, device=rand_device, dtype=dtype).to(device)


# ------------------------------------------------------------------------------------ config


def _rescale_zero_terminal_snr(betas):
    """diffusers' rescale_zero_terminal_snr (Lin et al. 2023, Algorithm 1), in float64."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_bar = root ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


class _Scheduler:
    """Config handling shared by the four classes.

    ``OPTIONS``: every argument of the diffusers class with its default (the config keys).
    ``UNSUPPORTED``: options the fused steps cannot reproduce -> the values accepted (their
    default, and values that change nothing); anything else raises naming the option.
    ``INERT``: options that only act together with an unsupported one: accepted at any value.
    """

    OPTIONS: dict = {}
    UNSUPPORTED: dict = {}
    INERT: tuple = ()
    order = 1
    _sigma_schedule = False  # Euler / DPM: alphas_cumprod[-1] = 2**-24 under rescale_betas_zero_snr

    def __init__(self, **config):
        for name in config:
            if name not in self.OPTIONS:
                raise TypeError(f"{type(self).__name__} got an unexpected argument {name!r}")
        cfg = {**self.OPTIONS, **config}
        for name, accepted in self.UNSUPPORTED.items():
            if not any(_same(cfg[name], a) for a in accepted):
                raise ValueError(f"{name}={cfg[name]!r} is not supported by sslfast.{type(self).__name__} (the fused "
                                 f"step does not implement it); supported: {accepted[0]!r}")
        self._check(cfg)
        self.config = FrozenConfig(cfg)
        self._schedule = self._noise_schedule(cfg)
        self.alphas_cumprod = self._schedule.alphas_cumprod
        self.num_inference_steps = None

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """A scheduler from a diffusers config (dict / FrozenDict, or a scheduler with ``.config``),
        ``kwargs`` overriding it. Private keys ("_class_name", ...) and keys of other schedulers
        are ignored, as in diffusers."""
        if config is not None and not isinstance(config, dict):
            config = getattr(config, "config", config)
            if not isinstance(config, dict):
                raise TypeError(f"config must be a dict (a scheduler's .config), got {type(config).__name__}")
        merged = {**(config or {}), **kwargs}
        init = {k: v for k, v in merged.items() if k in cls.OPTIONS}
        scheduler = cls(**init)
        if return_unused_kwargs:
            return scheduler, {k: v for k, v in merged.items() if k not in cls.OPTIONS and not k.startswith("_")}
        return scheduler

    def __len__(self):
        return self.config.num_train_timesteps

    def __repr__(self):
        return f"sslfast.{type(self).__name__}({dict(self.config)})"

    def _check(self, cfg):
        check.integer("num_train_timesteps", cfg["num_train_timesteps"], 1)
        ops._choice("prediction_type", cfg["prediction_type"], ops.PREDICTION_TYPES)
        ops._choice("timestep_spacing", cfg["timestep_spacing"], SPACINGS)
        check.integer("steps_offset", cfg["steps_offset"], 0)
        for name in ("clip_sample", "rescale_betas_zero_snr", "set_alpha_to_one", "use_karras_sigmas",
                     "lower_order_final", "euler_at_final"):
            if name in cfg:
                check.boolean(name, cfg[name])
        if "clip_sample_range" in cfg:
            check.positive_float("clip_sample_range", cfg["clip_sample_range"])

    def _noise_schedule(self, cfg):
        """NoiseSchedule tables (float64) from the config; trained_betas / zero-SNR rescaling
        replace its betas before the derived tables are made."""
        n, trained = cfg["num_train_timesteps"], cfg["trained_betas"]
        kind = "linear" if trained is not None else cfg["beta_schedule"]
        schedule = ops.NoiseSchedule(n, kind, cfg["beta_start"], cfg["beta_end"])
        betas = schedule.betas
        if trained is not None:
            betas = torch.as_tensor(np.asarray(trained, dtype=np.float64))
            if betas.dim() != 1 or betas.shape[0] != n:
                raise ValueError(f"trained_betas must be a list of num_train_timesteps = {n} betas, "
                                 f"got shape {tuple(betas.shape)}")
            if not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError("trained_betas must be in (0, 1)")
        if cfg["rescale_betas_zero_snr"]:
            betas = _rescale_zero_terminal_snr(betas)
        if trained is not None or cfg["rescale_betas_zero_snr"]:
            schedule.betas, schedule.alphas = betas, 1.0 - betas
            schedule.alphas_cumprod = torch.cumprod(schedule.alphas, dim=0)
            if cfg["rescale_betas_zero_snr"] and self._sigma_schedule:
                # diffusers: close to 0 so that the first sigma is finite
                schedule.alphas_cumprod[-1] = 2 ** -24
            schedule._derive()
            schedule.to("cpu")
        return schedule

    def _on(self, device):
        """The schedule's tables on ``device`` (moved once, when a sample first comes from there)."""
        if self._schedule.device != device:
            self._schedule.to(device)
        return self._schedule

    def scale_model_input(self, sample, timestep=None):
        return sample


def _same(a, b):
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


_BETA_OPTIONS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                 "trained_betas": None}
_THRESHOLD_OPTIONS = {"thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}


def _integer_timestep(timestep, device):
    """A DDPM / DDIM timestep (int or one-element integer tensor) -> (int on the host, tensor on
    ``device``). The host value is read as diffusers reads it (``t > 0``, index lookups)."""
    if isinstance(timestep, bool) or not isinstance(timestep, (int, np.integer, torch.Tensor)):
        raise TypeError(f"timestep must be an int or an integer tensor, got {type(timestep).__name__}")
    if isinstance(timestep, torch.Tensor):
        if timestep.numel() != 1 or timestep.is_floating_point() or timestep.dtype == torch.bool:
            raise TypeError(f"timestep must be one integer, got a {timestep.dtype} tensor of shape "
                            f"{tuple(timestep.shape)}")
        return int(timestep), timestep.reshape(()).to(device=device, dtype=torch.int64, non_blocking=True)
    return int(timestep), int(timestep)


def _timesteps_tensor(timesteps, like):
    if isinstance(timesteps, int) and not isinstance(timesteps, bool):
        return timesteps
    if not isinstance(timesteps, torch.Tensor):
        raise TypeError(f"timesteps must be an int or an integer tensor, got {type(timesteps).__name__}")
    if timesteps.is_floating_point() or timesteps.dtype == torch.bool:
        raise TypeError(f"timesteps must be an integer tensor, got dtype {timesteps.dtype}")
    timesteps = timesteps.to(device=like.device, dtype=torch.int64)  # the kernels index with int64
    return timesteps.reshape(-1) if timesteps.dim() else timesteps


def _check_steps(num_inference_steps, total):
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
            or not 1 <= num_inference_steps <= total:
        raise ValueError(f"num_inference_steps must be an int in [1, num_train_timesteps = {total}], "
                         f"got {num_inference_steps!r}")
    return int(num_inference_steps)


class _AlphaScheduler(_Scheduler):
    """DDPM / DDIM: integer timesteps; add_noise and get_velocity are q_sample."""

    init_noise_sigma = 1.0

    def __init__(self, **config):
        super().__init__(**config)
        total = self.config.num_train_timesteps
        self.timesteps = torch.from_numpy(np.arange(0, total)[::-1].copy().astype(np.int64))

    def _set_spacing(self, num_inference_steps, device):
        n = _check_steps(num_inference_steps, self.config.num_train_timesteps)
        timesteps = self._schedule.set_timesteps(n, self.config.timestep_spacing, self.config.steps_offset)
        if int(timesteps.max()) >= self.config.num_train_timesteps:
            raise ValueError(f"steps_offset={self.config.steps_offset} puts the first timestep at "
                             f"{int(timesteps.max())}, past num_train_timesteps - 1")
        self.num_inference_steps = n
        self.timesteps = timesteps.cpu() if device is None else timesteps.to(device)
        return timesteps

    def add_noise(self, original_samples, noise, timesteps):
        """sqrt(ab_t) x0 + sqrt(1 - ab_t) noise: the fused q_sample with the given noise."""
        ops._like("noise", noise, "original_samples", original_samples)
        t = _timesteps_tensor(timesteps, original_samples)
        return ops.q_sample(original_samples, t, self._on(original_samples.device), noise)[0]

    def get_velocity(self, sample, noise, timesteps):
        """v = sqrt(ab_t) noise - sqrt(1 - ab_t) sample: q_sample's v_prediction target."""
        ops._like("noise", noise, "sample", sample)
        t = _timesteps_tensor(timesteps, sample)
        return ops.q_sample(sample, t, self._on(sample.device), noise, target="v_prediction")[1]


# ------------------------------------------------------------------------------------ DDPM


class DDPMScheduler(_AlphaScheduler):
    """diffusers.DDPMScheduler on ``ddpm_step``. ``variance_type``: fixed_small, fixed_small_log
    (the same standard deviation, sqrt(v) = exp(log(v) / 2)), fixed_large."""

    OPTIONS = {**_BETA_OPTIONS, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
               **_THRESHOLD_OPTIONS, "clip_sample_range": 1.0, "timestep_spacing": "leading", "steps_offset": 0,
               "rescale_betas_zero_snr": False}
    UNSUPPORTED = {"thresholding": (False,)}
    INERT = ("dynamic_thresholding_ratio", "sample_max_value")
    _VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large"}

    def _check(self, cfg):
        super()._check(cfg)
        if cfg["variance_type"] not in self._VARIANCE:
            raise ValueError(f"variance_type must be one of {tuple(self._VARIANCE)} (learned variances need the "
                             f"model's second output, which the fused step does not take), "
                             f"got {cfg['variance_type']!r}")

    def __init__(self, **config):
        super().__init__(**config)
        self.custom_timesteps = False
        self._prev = None  # {t: previous t} when the default t - step_ratio is not it
        self.variance_type = self.config.variance_type

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        """As diffusers: the spaced timesteps, or custom descending ``timesteps``."""
        total = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        if timesteps is not None:
            steps = [int(t) for t in timesteps]
            if any(a <= b for a, b in zip(steps, steps[1:])):
                raise ValueError("timesteps must be in descending order")
            if not steps or steps[0] >= total or steps[-1] < 0:
                raise ValueError(f"timesteps must be non-empty, in [0, num_train_timesteps = {total})")
            self.custom_timesteps = True
            self.num_inference_steps = len(steps)
            self.timesteps = torch.tensor(steps, dtype=torch.int64, device=device)
        else:
            self.custom_timesteps = False
            self._set_spacing(num_inference_steps, device)
            steps = self.timesteps.tolist()
        # diffusers' previous_timestep is the next entry of the list (-1 after the last). Where
        # that is t - num_train_timesteps // n everywhere, the fused step's cached table serves.
        nexts = steps[1:] + [-1]
        ratio = total // len(steps)
        uniform = not self.custom_timesteps and all(p == t - ratio or (p < 0 and t - ratio < 0)
                                                    for t, p in zip(steps, nexts))
        self._prev = None if uniform else dict(zip(steps, nexts))

    def previous_timestep(self, timestep):
        t = int(timestep)
        if self.num_inference_steps is None and not self.custom_timesteps:
            return t - 1
        if self._prev is not None:
            return self._prev[t]
        return t - self.config.num_train_timesteps // self.num_inference_steps

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        """One DDPMScheduler.step through the fused ``ddpm_step``."""
        t_host, t = _integer_timestep(timestep, sample.device)
        schedule = self._on(sample.device)
        if self.num_inference_steps is None or self._prev is not None:
            if self._prev is not None and t_host not in self._prev:
                raise ValueError(f"timestep {t_host} is not one of the scheduler's timesteps")
            prev_t = self.previous_timestep(t_host)
        else:
            prev_t = None  # t - step_ratio: the fused step's cached coefficients
        kwargs = {}
        if t_host > 0:  # diffusers draws (and consumes the generator) only here
            kwargs["noise"] = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
        else:
            kwargs["seed"] = 0  # no noise is added at t = 0: any key, and no generator consumed
        prev_sample, x0 = ops.ddpm_step(
            model_output, t, sample, schedule, prev_t=prev_t, prediction_type=self.config.prediction_type,
            variance_type=self._VARIANCE[self.config.variance_type], clip_sample=self.config.clip_sample,
            clip_sample_range=self.config.clip_sample_range, **kwargs)
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)


# ------------------------------------------------------------------------------------ DDIM


class DDIMScheduler(_AlphaScheduler):
    """diffusers.DDIMScheduler on ``ddim_step`` (eta, clip_sample, use_clipped_model_output,
    set_alpha_to_one, variance_noise)."""

    OPTIONS = {**_BETA_OPTIONS, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0,
               "prediction_type": "epsilon", **_THRESHOLD_OPTIONS, "clip_sample_range": 1.0,
               "timestep_spacing": "leading", "rescale_betas_zero_snr": False}
    UNSUPPORTED = {"thresholding": (False,)}
    INERT = ("dynamic_thresholding_ratio", "sample_max_value")

    def __init__(self, **config):
        super().__init__(**config)
        self.final_alpha_cumprod = 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps, device=None):
        self._set_spacing(num_inference_steps, device)

    def step(self, model_output, timestep, sample, eta=0.0, use_clipped_model_output=False, generator=None,
             variance_noise=None, return_dict=True):
        """One DDIMScheduler.step through the fused ``ddim_step`` (prev = t - T // n, as diffusers)."""
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps before step")
        eta = check.real("eta", eta)
        _, t = _integer_timestep(timestep, sample.device)
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass generator or variance_noise, not both")
            noise = variance_noise if variance_noise is not None else randn_tensor(
                model_output.shape, generator, model_output.device, model_output.dtype)
        prev_sample, x0 = ops.ddim_step(
            model_output, t, sample, self._on(sample.device), eta=eta, noise=noise,
            prediction_type=self.config.prediction_type, clip_sample=self.config.clip_sample,
            clip_sample_range=self.config.clip_sample_range,
            use_clipped_model_output=bool(use_clipped_model_output), final_alpha_cumprod=self.final_alpha_cumprod)
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)


# ------------------------------------------------------------------------------------ sigma schedulers


def _karras(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. (2022) sigmas, as diffusers' _convert_to_karras."""
    ramp = np.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (high + ramp * (low - high)) ** rho


def _sigma_to_t(sigmas, log_sigmas):
    """Fractional timesteps of ``sigmas`` by interpolation in log sigma (diffusers' _sigma_to_t,
    vectorised over sigmas)."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return (1 - w) * low + w * high


class _SigmaScheduler(_Scheduler):
    """Euler / DPM: a sigma per inference step (float32 on the CPU, as diffusers keeps them; a
    copy on the sample's device feeds the fused step) and a step index."""

    _sigma_schedule = True

    def __init__(self, **config):
        super().__init__(**config)
        self._step_index = None
        self._begin_index = None
        self._device_sigmas = None

    @property
    def step_index(self):
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index=0):
        self._begin_index = check.integer("begin_index", begin_index, 0)

    def _train_sigmas(self):
        return self._schedule.sigmas.cpu().numpy()

    def _final_sigma(self):
        if self.config.final_sigmas_type == "sigma_min":
            ac = float(self.alphas_cumprod[0])
            return ((1 - ac) / ac) ** 0.5
        return 0.0

    def _set(self, timesteps, sigmas, device):
        self.sigmas = torch.from_numpy(np.asarray(sigmas, dtype=np.float32))
        self.timesteps = timesteps.to(device) if device is not None else timesteps
        self._device_sigmas = None
        self._step_index = None
        self._begin_index = None

    def _sigmas_on(self, device):
        if self._device_sigmas is None or self._device_sigmas.device != device:
            self._device_sigmas = self.sigmas.to(device)
        return self._device_sigmas

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        indices = (schedule_timesteps == timestep).nonzero()
        if len(indices) == 0:
            raise ValueError(f"timestep {timestep} is not one of the scheduler's timesteps")
        return int(indices[1 if len(indices) > 1 else 0])

    def _init_step_index(self, timestep):
        if self._begin_index is None:
            if isinstance(timestep, torch.Tensor):
                timestep = timestep.to(self.timesteps.device)
            self._step_index = self.index_for_timestep(timestep)
        else:
            self._step_index = self._begin_index

    def _step_indices(self, timesteps, like):
        schedule_timesteps = self.timesteps.to(like.device)
        timesteps = timesteps.to(like.device).reshape(-1)
        if self._begin_index is None:
            return [self.index_for_timestep(t, schedule_timesteps) for t in timesteps]
        index = self._step_index if self._step_index is not None else self._begin_index
        return [index] * timesteps.shape[0]

    def _sigma_at(self, timesteps, like):
        if not isinstance(timesteps, torch.Tensor):
            raise TypeError(f"timesteps must be a tensor, got {type(timesteps).__name__}")
        sigma = self.sigmas.to(device=like.device, dtype=like.dtype)[self._step_indices(timesteps, like)]
        return sigma.reshape(-1, *([1] * (like.dim() - 1)))

    @staticmethod
    def _no_custom(**given):
        for name, value in given.items():
            if value is not None:
                raise ValueError(f"set_timesteps({name}=...) is not supported by the sslfast scheduler; "
                                 "pass num_inference_steps")


# ------------------------------------------------------------------------------------ Euler


class EulerDiscreteScheduler(_SigmaScheduler):
    """diffusers.EulerDiscreteScheduler on ``euler_step`` (and ``euler_scale_model_input``).
    ``s_churn`` > 0 adds its noise before the fused step (exact for epsilon and sample)."""

    OPTIONS = {**_BETA_OPTIONS, "prediction_type": "epsilon", "interpolation_type": "linear",
               "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
               "sigma_min": None, "sigma_max": None, "timestep_spacing": "linspace", "timestep_type": "discrete",
               "steps_offset": 0, "rescale_betas_zero_snr": False, "final_sigmas_type": "zero"}
    UNSUPPORTED = {"interpolation_type": ("linear",), "use_exponential_sigmas": (False,),
                   "use_beta_sigmas": (False,)}

    def _check(self, cfg):
        super()._check(cfg)
        ops._choice("timestep_type", cfg["timestep_type"], ("discrete", "continuous"))
        ops._choice("final_sigmas_type", cfg["final_sigmas_type"], ("zero", "sigma_min"))
        for name in ("sigma_min", "sigma_max"):
            if cfg[name] is not None:
                check.positive_float(name, cfg[name])

    def __init__(self, **config):
        super().__init__(**config)
        total = self.config.num_train_timesteps
        sigmas = np.concatenate([self._train_sigmas()[::-1], [0.0]])
        timesteps = torch.from_numpy(np.linspace(0, total - 1, total)[::-1].astype(np.float32))
        self._set(self._continuous(timesteps, sigmas), sigmas, None)
        self.is_scale_input_called = False

    def _continuous(self, timesteps, sigmas):
        if self.config.timestep_type == "continuous" and self.config.prediction_type == "v_prediction":
            return torch.from_numpy(0.25 * np.log(np.asarray(sigmas[:-1], dtype=np.float32)))
        return timesteps

    @property
    def init_noise_sigma(self):
        max_sigma = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        return (max_sigma ** 2 + 1) ** 0.5

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None, sigmas=None):
        self._no_custom(timesteps=timesteps, sigmas=sigmas)
        total = self.config.num_train_timesteps
        n = _check_steps(num_inference_steps, total)
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            steps = np.linspace(0, total - 1, n, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            steps = (np.arange(0, n) * (total // n)).round()[::-1].copy().astype(np.float32) + self.config.steps_offset
        else:
            steps = np.arange(total, 0, -total / n).round().astype(np.float32) - 1
        train = self._train_sigmas()
        sig = np.interp(steps, np.arange(0, len(train)), train)
        if self.config.use_karras_sigmas:
            low = self.config.sigma_min if self.config.sigma_min is not None else sig[-1]
            high = self.config.sigma_max if self.config.sigma_max is not None else sig[0]
            sig = _karras(low, high, n)
            steps = _sigma_to_t(sig, np.log(train))
        sig = np.concatenate([sig, [self._final_sigma()]]).astype(np.float32)
        self.num_inference_steps = n
        timesteps = self._continuous(torch.from_numpy(steps.astype(np.float32)), sig)
        self._set(timesteps, sig, device)

    def scale_model_input(self, sample, timestep):
        """sample / sqrt(sigma^2 + 1) (the fused euler_scale_model_input)."""
        if self._step_index is None:
            self._init_step_index(timestep)
        self.is_scale_input_called = True
        return ops.euler_scale_model_input(sample, self._sigmas_on(sample.device)[self._step_index])

    def step(self, model_output, timestep, sample, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
             generator=None, return_dict=True):
        """One EulerDiscreteScheduler.step through the fused ``euler_step``."""
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)) and not isinstance(timestep, bool):
            raise ValueError("timestep must be one of scheduler.timesteps, not an integer index")
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if i + 1 >= len(self.sigmas):
            raise ValueError("step called after the last timestep: call set_timesteps again")
        sigmas = self._sigmas_on(sample.device)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        s_churn = check.real("s_churn", s_churn)
        sigma_host = float(self.sigmas[i])
        gamma = min(s_churn / (len(self.sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigma_host <= s_tmax else 0.0
        if gamma > 0:
            if self.config.prediction_type == "v_prediction":
                # diffusers' x0 uses sigma there but its derivative sigma_hat: not one fused step
                raise ValueError("s_churn > 0 with prediction_type='v_prediction' is not supported by the fused "
                                 "Euler step")
            sigma_cpu = self.sigmas[i]
            sigma_hat_cpu = sigma_cpu * (gamma + 1)
            noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
            sample = sample + noise * s_noise * ((sigma_hat_cpu ** 2 - sigma_cpu ** 2) ** 0.5).to(sample.device)
            sigma = sigma_hat_cpu.to(sample.device)
        prev_sample, x0 = ops.euler_step(model_output, sample, sigma, sigma_next,
                                         prediction_type=self.config.prediction_type)
        self._step_index += 1
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)

    def add_noise(self, original_samples, noise, timesteps):
        """x0 + sigma(t) noise, sigma looked up by the timestep's index (diffusers' add_noise)."""
        ops._like("noise", noise, "original_samples", original_samples)
        return original_samples + noise * self._sigma_at(timesteps, original_samples)


# ------------------------------------------------------------------------------------ DPM-Solver++


class DPMSolverMultistepScheduler(_SigmaScheduler):
    """diffusers.DPMSolverMultistepScheduler (algorithm_type dpmsolver++, midpoint, solver_order 1
    or 2) on ``dpmpp_2m_step``: the previous step's x0 is kept and fed to the next call."""

    OPTIONS = {**_BETA_OPTIONS, "solver_order": 2, "prediction_type": "epsilon", **_THRESHOLD_OPTIONS,
               "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
               "euler_at_final": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
               "use_beta_sigmas": False, "use_lu_lambdas": False, "use_flow_sigmas": False, "flow_shift": 1.0,
               "final_sigmas_type": "zero", "lambda_min_clipped": -math.inf, "variance_type": None,
               "timestep_spacing": "linspace", "steps_offset": 0, "rescale_betas_zero_snr": False,
               "use_dynamic_shifting": False, "time_shift_type": "exponential"}
    # diffusers maps DEIS' and UniPC's solver names onto these (a from_config across schedulers)
    UNSUPPORTED = {"thresholding": (False,), "algorithm_type": ("dpmsolver++", "deis"),
                   "solver_type": ("midpoint", "logrho", "bh1", "bh2"), "use_exponential_sigmas": (False,),
                   "use_beta_sigmas": (False,), "use_lu_lambdas": (False,), "use_flow_sigmas": (False,),
                   "variance_type": (None,), "use_dynamic_shifting": (False,)}
    INERT = ("dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type")

    def _check(self, cfg):
        super()._check(cfg)
        if cfg["solver_order"] not in (1, 2) or isinstance(cfg["solver_order"], bool):
            raise ValueError(f"solver_order must be 1 or 2 (the fused step is DPM-Solver++ 2M), "
                             f"got {cfg['solver_order']!r}")
        ops._choice("final_sigmas_type", cfg["final_sigmas_type"], ("zero", "sigma_min"))
        lam = cfg["lambda_min_clipped"]
        check.real("lambda_min_clipped", lam if lam != -math.inf else 0.0)
        cfg["algorithm_type"], cfg["solver_type"] = "dpmsolver++", "midpoint"

    def __init__(self, **config):
        super().__init__(**config)
        total = self.config.num_train_timesteps
        self.sigmas = torch.from_numpy(self._train_sigmas().astype(np.float32))
        self.timesteps = torch.from_numpy(np.linspace(0, total - 1, total, dtype=np.float32)[::-1].copy())
        self.init_noise_sigma = 1.0
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums = 0

    def set_timesteps(self, num_inference_steps=None, device=None, mu=None, timesteps=None):
        self._no_custom(mu=mu, timesteps=timesteps)
        total = self.config.num_train_timesteps
        n = _check_steps(num_inference_steps, total)
        ac = self.alphas_cumprod.cpu().numpy()
        lambdas = 0.5 * np.log(ac) - 0.5 * np.log(1 - ac)  # log(alpha_t) - log(sigma_t)
        last = total - int(np.searchsorted(lambdas[::-1], self.config.lambda_min_clipped))
        spacing = self.config.timestep_spacing
        if spacing == "linspace":
            steps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = last // (n + 1)
            steps = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + self.config.steps_offset
        else:
            steps = np.arange(last, 0, -total / n).round().copy().astype(np.int64) - 1
        train = self._train_sigmas()
        if self.config.use_karras_sigmas:
            sig = _karras(train[0], train[-1], n)
            steps = _sigma_to_t(sig, np.log(train))
            if self.config.beta_schedule != "squaredcos_cap_v2":
                steps = steps.round()
        else:
            sig = np.interp(steps, np.arange(0, len(train)), train)
        sig = np.concatenate([sig, [self._final_sigma()]]).astype(np.float32)
        self.num_inference_steps = len(steps)
        self._set(torch.from_numpy(np.asarray(steps)).to(torch.int64), sig, device)
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums = 0

    def index_for_timestep(self, timestep, schedule_timesteps=None):
        if schedule_timesteps is None:
            schedule_timesteps = self.timesteps
        indices = (schedule_timesteps == timestep).nonzero()
        if len(indices) == 0:  # diffusers: the last step
            return len(self.timesteps) - 1
        return int(indices[1 if len(indices) > 1 else 0])

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
        """One DPMSolverMultistepScheduler.step through the fused ``dpmpp_2m_step``; the returned
        x0 becomes the next step's ``prev_x0``. ``generator`` / ``variance_noise`` are unused
        (dpmsolver++ is deterministic), as in diffusers."""
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps before step")
        if self._step_index is None:
            self._init_step_index(timestep)
        i, n = self._step_index, len(self.timesteps)
        if i >= n:
            raise ValueError("step called after the last timestep: call set_timesteps again")
        lower_order_final = i == n - 1 and (self.config.euler_at_final or self.config.final_sigmas_type == "zero"
                                            or (self.config.lower_order_final and n < 15))
        second = self.config.solver_order == 2 and self.lower_order_nums >= 1 and not lower_order_final
        sigmas = self._sigmas_on(sample.device)
        prev_x0 = self.model_outputs[-1] if second else None
        if prev_x0 is not None and prev_x0.dtype != sample.dtype:
            prev_x0 = prev_x0.to(sample.dtype)
        prev_sample, x0 = ops.dpmpp_2m_step(model_output, sample, sigmas[i], sigmas[i + 1], prev_x0,
                                            sigmas[i - 1] if second else None,
                                            prediction_type=self.config.prediction_type)
        self.model_outputs = self.model_outputs[1:] + [x0]
        if self.lower_order_nums < self.config.solver_order:
            self.lower_order_nums += 1
        self._step_index += 1
        if not return_dict:
            return (prev_sample,)  # diffusers' tuple has prev_sample only
        return SchedulerOutput(prev_sample, x0)

    def add_noise(self, original_samples, noise, timesteps):
        """alpha_t x0 + sigma_t noise at the timestep's sigma (diffusers' add_noise)."""
        ops._like("noise", noise, "original_samples", original_samples)
        sigma = self._sigma_at(timesteps, original_samples)
        alpha_t = 1 / (sigma ** 2 + 1) ** 0.5
        return alpha_t * original_samples + sigma * alpha_t * noise
