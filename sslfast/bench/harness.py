"""Benchmark harness behind ``python -m sslfast.bench``.

Every case (one op at one size) is timed in each mode (``fwd``, ``fwd+bwd``) for three
implementations measured side by side in the same run, interleaved round by round:

* ``sslfast``: the public op, backend ``auto`` (or whatever ``SSLFAST_BACKEND`` forces);
* ``eager``: the ``sslfast.reference`` function (the same one the tests trust);
* ``compile``: ``torch.compile(reference_fn)``, warmed up before timing.

Per implementation it records median / p20 / p80 wall time, peak extra memory, and achieved
TFLOP/s or GB/s against the case's FLOP / byte model. Results go to stdout (one table) and to
``--out``: ``results.json``, ``results.md`` and ``results.png``.

Families register their cases with :func:`register_family`; every module in this package
(other than this one and ``__main__``) is imported on discovery, so adding
``sslfast/bench/<family>.py`` is all a new family needs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import json
import math
import os
import pkgutil
import platform
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from .. import _dispatch, _native

IMPLS = ("sslfast", "eager", "compile")
MODES = ("fwd", "fwd+bwd")
SIZE_SETS = ("full", "quick", "tiny")  # "tiny" is hidden: for the harness's own tests

MiB = float(1 << 20)


# --------------------------------------------------------------------------------------------
# Cases and the family registry
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """Arguments of one call; ``.grad`` of each tensor in ``leaves`` is cleared between runs."""

    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    leaves: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Case:
    """One op at one size.

    ``make_inputs(device, dtype, requires_grad) -> Inputs`` must be deterministic (fixed seed).
    ``flops(mode)`` / ``bytes(mode)`` give the model used for the achieved TFLOP/s / GB/s column;
    ``extra_flops`` holds further named FLOP models reported in the JSON only.
    ``backend(device) -> str`` says which backend the sslfast op actually runs for this device.
    ``cost`` is a rough relative cost used to weight the progress bar's ETA.
    """

    family: str
    op: str
    label: str
    params: dict
    make_inputs: Callable[[torch.device, torch.dtype, bool], Inputs]
    sslfast_fn: Callable
    reference_fn: Callable
    flops: Callable[[str], float] | None = None
    bytes: Callable[[str], float] | None = None
    extra_flops: dict = dataclasses.field(default_factory=dict)
    backend: Callable[[torch.device], str] | None = None
    modes: tuple = MODES
    headline: bool = False
    cost: float = 1.0
    backward: Callable[[Any], None] | None = None  # default: scalar.backward() / out.backward(ones)
    model_note: str = ""  # one line saying what flops / bytes count, for the Markdown report
    # Further named byte models (JSON: bytes_<name>, gbps_<name>), and further named baselines
    # timed side by side like eager (e.g. torch.sparse.mm for spmm): JSON impls[<name>] and
    # speedup_vs[<name>]; the table's last column shows their ratios.
    extra_bytes: dict = dataclasses.field(default_factory=dict)
    baselines: dict = dataclasses.field(default_factory=dict)
    # Per-call cost cases (the ``overhead`` family): each timed sample runs the call this many
    # times and reports the mean per call (a single tiny call is too short to time alone), with
    # torch limited to ``threads`` threads; ``target(mode, impls) -> (met, text)`` judges the
    # record against the op's target (JSON ``target``, printed with the table).
    calls_per_sample: int = 1
    rounds: int | None = None  # timed rounds (overrides the adaptive count; --repeats wins)
    threads: int | None = None
    # CPU clock: "wall" (perf_counter) or "thread" (the calling thread's CPU time: with one torch
    # thread that is the whole cost of a call, and other processes on a shared machine do not
    # inflate it). CUDA always uses events.
    cpu_clock: str = "wall"
    target: Callable[[str, dict], tuple] | None = None


@dataclasses.dataclass
class Context:
    """What a family's case factory is told: where and how big."""

    device: torch.device
    dtype: torch.dtype
    sizes: str  # one of SIZE_SETS


_FAMILIES: dict[str, Callable[[Context], list]] = {}
_BROKEN: dict[str, str] = {}  # module name -> import error


def backend_of(op_name: str):
    """Case.backend for a public op: the backend the op table resolves on a device."""
    return lambda device: _dispatch.backend_name(op_name, device.type)


def register_family(name: str):
    """Decorator: ``@register_family("contrastive") def cases(ctx: Context) -> list[Case]``."""

    def wrap(fn):
        _FAMILIES[name] = fn
        return fn

    return wrap


def discover() -> tuple[dict, dict]:
    """Import every family module of this package; returns (families, broken modules)."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name == "harness":
            continue
        try:
            importlib.import_module(f"{__package__}.{info.name}")
        except Exception as error:  # a family under construction must not break the others
            _BROKEN[info.name] = f"{type(error).__name__}: {error}"
    return dict(_FAMILIES), dict(_BROKEN)


# --------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------


def _default_backward(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 0:
        out.backward()
    else:
        out.backward(torch.ones_like(out))


def call_once(fn, inputs: Inputs, backward: bool, backward_fn=None):
    """One measured call: the function, then the backward pass in ``fwd+bwd`` mode."""
    out = fn(*inputs.args, **inputs.kwargs)
    if backward:
        (backward_fn or _default_backward)(out)
    return out


def clear_grads(inputs: Inputs):
    for t in inputs.leaves:
        t.grad = None


def _tensors(value, _seen=None):
    """Tensors in ``value``: nested tuples, lists, dicts and plain objects' attributes (a Graph)."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, (tuple, list)):
        children = value
    elif isinstance(value, dict):
        children = value.values()
    elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        children = vars(value).values()
    else:
        return
    for v in children:
        yield from _tensors(v, seen)


def result_bytes(out, inputs: Inputs) -> int:
    """Bytes every implementation has to allocate: the storages of the returned tensors and of
    the input gradients, each storage once, leaving out storages the inputs already own."""
    def strided(tensors):  # sparse tensors (a cached torch CSR baseline) have no single storage
        return [t for t in tensors if t.layout == torch.strided]

    owned = {t.untyped_storage().data_ptr() for t in strided(_tensors((inputs.args, inputs.kwargs)))}
    seen, total = set(), 0
    for t in strided(list(_tensors(out)) + [leaf.grad for leaf in inputs.leaves if leaf.grad is not None]):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in owned and ptr not in seen:
            seen.add(ptr)
            total += storage.nbytes()
    return total


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(run: Callable[[], Any], device: torch.device, calls: int = 1, clock: str = "wall") -> float:
    """Milliseconds per ``run()``, over ``calls`` back-to-back calls: CUDA events on GPUs,
    ``perf_counter`` (or the thread's CPU time, ``clock="thread"``) on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            run()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / calls
    now = time.thread_time if clock == "thread" else time.perf_counter
    t0 = now()
    for _ in range(calls):
        run()
    return (now() - t0) * 1e3 / calls


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence C-level stderr (the CPU profiler prints 'USDT ... profiler_start/stop' lines)."""
    try:
        sys.stderr.flush()
        fd = 2
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _cpu_peak_bytes(run: Callable[[], Any]) -> int:
    """Peak of the running sum of allocator events seen by the profiler during ``run()``."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr_fd():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()  # > 0 allocation, < 0 free
        peak = max(peak, running)
    return peak


def measure_peak_mib(run: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Peak memory allocated by ``run()`` on top of what was allocated before it, in MiB.

    CUDA: ``max_memory_allocated`` minus the baseline. CPU: the PyTorch profiler's memory
    events (``profile_memory=True``), i.e. allocations through PyTorch's CPU allocator only.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MiB
    return _cpu_peak_bytes(run) / MiB


def quantile(samples, q: float) -> float:
    """Linear-interpolated quantile (numpy's default), ``q`` in [0, 1]."""
    xs = sorted(samples)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median_ci(samples, level: float = 0.95):
    """(lower, upper): a distribution-free confidence interval of the median, from the order
    statistics whose binomial coverage is at least ``level`` (the sample range when there are
    too few samples to reach it)."""
    xs = sorted(samples)
    n = len(xs)
    if not n:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    # j: the largest rank with P(Binomial(n, 1/2) < j) <= tail; the interval is (x_(j), x_(n+1-j)).
    j, below = 0, 0.0
    while j < n and below + math.comb(n, j) / 2 ** n <= tail:
        below += math.comb(n, j) / 2 ** n
        j += 1
    j = max(j, 1)
    return xs[j - 1], xs[n - j]


def paired_ratio(impls, base: str = "eager"):
    """{median, ci95, rounds} of the per-round ratios base / sslfast, or None. Each round times
    every implementation back to back, so a slow spell of a shared machine hits both sides of a
    ratio; the interval says what the rounds can resolve."""
    a, b = impls.get(base, {}).get("samples_ms"), impls.get("sslfast", {}).get("samples_ms")
    if not a or not b or len(a) != len(b):
        return None
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    if not ratios:
        return None
    return {"median": quantile(ratios, 0.5), "ci95": list(median_ci(ratios)), "rounds": len(ratios)}


def _error_text(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    msg = f"{type(error).__name__}: {first}"
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _compile(fn):
    """``torch.compile`` of a reference function (a separate name so tests can make it fail)."""
    return torch.compile(fn, dynamic=False)


# --------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    warmup: int
    repeats: int | None  # exact count, or None: adaptive between min_repeats and max_repeats
    min_repeats: int
    max_repeats: int
    budget_s: float  # per (case, mode): time for the timed rounds when adaptive
    compile: bool
    warmup_s: float = 0.0  # extra warm-up time for fast calls


def default_plan(device: torch.device, quick: bool, repeats: int | None, compile_: bool) -> Plan:
    if device.type == "cuda":
        if quick:
            return Plan(3, repeats, 10, 20, 2.0, compile_, 0.1)
        return Plan(5, repeats, 20, 100, 5.0, compile_, 0.2)
    if quick:
        return Plan(1, repeats, 3, 5, 6.0, compile_, 0.1)
    return Plan(1, repeats, 3, 10, 12.0, compile_, 0.2)


def _oom_cleanup(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_mode(case: Case, mode: str, device, dtype, plan: Plan, compiled) -> dict:
    """Time and measure all implementations of one case in one mode; returns a record."""
    backward = mode == "fwd+bwd"
    inputs = case.make_inputs(device, dtype, backward)
    fns = {"sslfast": case.sslfast_fn, "eager": case.reference_fn}
    results = {name: {"error": None} for name in IMPLS + tuple(case.baselines)}
    if plan.compile:
        if isinstance(compiled, BaseException):
            results["compile"]["error"] = _error_text(compiled)
        else:
            fns["compile"] = compiled
    else:
        results["compile"]["error"] = "skipped (--no-compile)"
    fns.update(case.baselines)

    required = {}

    def runner(fn, name, record_outputs=False):
        def run():
            clear_grads(inputs)
            out = call_once(fn, inputs, backward, case.backward)
            if record_outputs:  # the memory probe only: keeps bookkeeping out of timed calls
                required[name] = result_bytes(out, inputs)

        return run

    runs, last_s = {}, {}
    # Warm-up. The compile baseline compiles on its first call (reported as first_call_s, never
    # profiled). On CPU the memory-probe call doubles as the last of plan.warmup warm-up calls
    # (each slow call counts on 2 cores); on CUDA it comes after them (cuBLAS workspaces etc.).
    # Fast calls then keep warming until plan.warmup_s is spent; the last one sizes the rounds.
    for name, fn in fns.items():
        run = runner(fn, name)

        def timed(run=run):
            t0 = time.perf_counter()
            run()
            _sync(device)
            return time.perf_counter() - t0

        try:
            n_plain = plan.warmup - (1 if device.type == "cpu" and plan.warmup > 0 else 0)
            if name == "compile":
                results[name]["first_call_s"] = round(timed(), 3)
            for _ in range(n_plain):
                last_s[name] = timed()
            clear_grads(inputs)
            t0 = time.perf_counter()
            peak = results[name]["peak_mib"] = measure_peak_mib(runner(fn, name, record_outputs=True), device)
            # Scratch: the peak minus the outputs and gradients any implementation must return.
            results[name]["required_mib"] = required[name] / MiB
            results[name]["scratch_mib"] = max(0.0, peak - required[name] / MiB)
            probe_s = time.perf_counter() - t0
            warm_t, extra = 0.0, 0
            while warm_t < plan.warmup_s and extra < 50 and min(last_s.get(name, probe_s),
                                                                probe_s) < plan.warmup_s:
                last_s[name] = timed()
                warm_t += last_s[name]
                extra += 1
            last_s.setdefault(name, probe_s)
            runs[name] = run
        except Exception as error:  # OOM, compile failure, unsupported dtype ...
            results[name]["error"] = _error_text(error)
            clear_grads(inputs)
            _oom_cleanup(device)

    # How many timed rounds: exact, or as many as fit the budget (between min and max).
    if plan.repeats is not None:
        rounds = max(1, plan.repeats)
    elif case.rounds is not None:
        rounds = case.rounds
    else:
        est = sum(last_s.get(name, 0.0) for name in runs) * case.calls_per_sample
        rounds = int(plan.budget_s / est) if est > 0 else plan.max_repeats
        rounds = max(plan.min_repeats, min(plan.max_repeats, rounds))

    samples = {name: [] for name in runs}
    order = list(runs)
    for r in range(rounds):
        # Interleaved, with the order rotated each round so no implementation always goes first.
        k = r % len(order) if order else 0
        for name in order[k:] + order[:k]:
            if name not in runs:
                continue
            clear_grads(inputs)
            try:
                samples[name].append(time_once(runs[name], device, case.calls_per_sample, case.cpu_clock))
            except Exception as error:
                results[name]["error"] = _error_text(error)
                runs.pop(name)
                _oom_cleanup(device)
    clear_grads(inputs)

    flops = case.flops(mode) if case.flops else None
    nbytes = case.bytes(mode) if case.bytes else None
    for name, xs in samples.items():
        if not xs:
            continue
        med = quantile(xs, 0.5)
        res = results[name]
        res.update(median_ms=med, p20_ms=quantile(xs, 0.2), p80_ms=quantile(xs, 0.8),
                   min_ms=min(xs), samples_ms=[round(x, 4) for x in xs])
        if flops:
            res["tflops"] = flops / (med * 1e-3) / 1e12
            for key, model in case.extra_flops.items():
                extra = model(mode)
                if extra:
                    res[f"tflops_{key}"] = extra / (med * 1e-3) / 1e12
        if nbytes:
            res["gbps"] = nbytes / (med * 1e-3) / 1e9
        for key, model in case.extra_bytes.items():
            extra = model(mode)
            if extra:
                res[f"gbps_{key}"] = extra / (med * 1e-3) / 1e9

    def ratio(base):
        a, b = results[base].get("median_ms"), results["sslfast"].get("median_ms")
        return a / b if a and b else None

    try:
        backend = case.backend(device) if case.backend else None
    except Exception as error:
        backend = f"unresolvable ({_error_text(error)})"
    record = {
        "family": case.family,
        "op": case.op,
        "case": case.label,
        "params": dict(case.params),
        "mode": mode,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "headline": bool(case.headline),
        "backend": backend,
        "backend_requested": _dispatch.get_backend(),
        "native_available": bool(_native.AVAILABLE),
        "rounds": rounds,
        "calls_per_sample": case.calls_per_sample,
        "clock": "cuda events" if device.type == "cuda" else case.cpu_clock,
        "warmup": plan.warmup,
        "flops": flops,
        "bytes": nbytes,
        "model_note": case.model_note,
        "impls": results,
        "speedup_vs_eager": ratio("eager"),
        "speedup_vs_compile": ratio("compile"),
    }
    if case.baselines:
        record["speedup_vs"] = {name: ratio(name) for name in case.baselines}
    paired = paired_ratio(results)
    if paired:
        record["paired_vs_eager"] = paired
    if case.target and results["sslfast"].get("median_ms") is not None:
        met, text = case.target(mode, results)
        record["target"] = {"met": bool(met), "text": text}
    for key, model in case.extra_flops.items():
        record[f"flops_{key}"] = model(mode)
    for key, model in case.extra_bytes.items():
        record[f"bytes_{key}"] = model(mode)
    inputs = None  # free the tensors before the next case (the runners above close over the name)
    return record


def run_case(case: Case, device, dtype, plan: Plan) -> list:
    if case.threads is not None:
        threads = torch.get_num_threads()
        torch.set_num_threads(case.threads)
        try:
            return run_case(dataclasses.replace(case, threads=None), device, dtype, plan)
        finally:
            torch.set_num_threads(threads)
    compiled = None
    if plan.compile:
        torch._dynamo.reset()  # fresh graphs per case; no shape-driven recompiles to dynamic
        try:
            compiled = _compile(case.reference_fn)
        except Exception as error:
            compiled = error
    records = []
    for mode in case.modes:
        records.append(run_mode(case, mode, device, dtype, plan, compiled))
    return records


# --------------------------------------------------------------------------------------------
# Environment and reporting
# --------------------------------------------------------------------------------------------


def _pkg_version(*names):
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    import sslfast

    native = _native
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": _driver_version() if device.type == "cuda" else None,
        "triton": _pkg_version("triton", "pytorch-triton"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "sslfast_version": getattr(sslfast, "__version__", None),
        "backend_requested": _dispatch.get_backend(),
        "native_available": bool(native.AVAILABLE),
        "native_import_error": None if native.AVAILABLE else str(native.IMPORT_ERROR),
    }


def measure_ceilings(device: torch.device, small: bool = False) -> dict:
    """What this device can do at best, measured now: bandwidth of a large device copy (read +
    write counted) and the throughput of a large matmul (bf16 on CUDA, float32 on CPU). Each
    case's GB/s and TFLOP/s are also reported as a percentage of these."""
    if device.type == "cuda":
        copy_mib, mm, mm_dtype, reps = (64, 1024, torch.bfloat16, 5) if small else (2048, 8192, torch.bfloat16, 20)
    else:
        copy_mib, mm, mm_dtype, reps = (16, 256, torch.float32, 3) if small else (256, 2048, torch.float32, 5)

    def median_s(fn):
        fn()
        return quantile([time_once(fn, device) for _ in range(reps)], 0.5) * 1e-3

    src = torch.ones(copy_mib * 2 ** 18, device=device)  # float32: 2^18 elements per MiB
    dst = torch.empty_like(src)
    copy_s = median_s(lambda: dst.copy_(src))
    src = dst = None  # free them before the matmul probe
    a = torch.randn(mm, mm, device=device).to(mm_dtype)
    b = torch.randn(mm, mm, device=device).to(mm_dtype)
    mm_s = median_s(lambda: torch.mm(a, b))
    a = b = None
    _oom_cleanup(device)
    return {"copy_gbps": 2 * copy_mib * MiB / copy_s / 1e9, "copy_mib": copy_mib,
            "matmul_tflops": 2 * mm ** 3 / mm_s / 1e12, "matmul": f"{mm}^3 {str(mm_dtype).replace('torch.', '')}"}


def add_ceiling_fractions(records, ceilings: dict) -> None:
    """``pct_of_copy_bw`` / ``pct_of_matmul`` per implementation: its GB/s or TFLOP/s against
    the device's measured ceilings."""
    for r in records:
        for res in r["impls"].values():
            if res.get("gbps") is not None and ceilings.get("copy_gbps"):
                res["pct_of_copy_bw"] = 100 * res["gbps"] / ceilings["copy_gbps"]
            if res.get("tflops") is not None and ceilings.get("matmul_tflops"):
                res["pct_of_matmul"] = 100 * res["tflops"] / ceilings["matmul_tflops"]


def _num(x) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _fmt_ms(res) -> str:
    if res.get("median_ms") is None:
        err = res.get("error") or "n/a"
        return "skipped" if err.startswith("skipped") else "error"
    return _num(res["median_ms"])


def _fmt_ms_range(res) -> str:
    base = _fmt_ms(res)
    if res.get("median_ms") is None:
        return base
    return f"{base} [{_num(res['p20_ms'])}-{_num(res['p80_ms'])}]"


def _fmt_x(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _fmt_mib(res, key="peak_mib") -> str:
    v = res.get(key)
    return "-" if v is None else (f"{v:.1f}" if v < 1000 else f"{v:.0f}")


def _fmt_pct(pct) -> str:
    return "" if pct is None else f" ({pct:.0f}%)"


def table_rows(records) -> tuple[list, list]:
    header = ["op", "size", "mode", "backend", "sslfast ms [p20-p80]", "eager ms", "compile ms",
              "vs eager", "vs compile", "peak MiB sslfast/eager/compile", "scratch MiB s/e/c",
              "sslfast TFLOP/s or GB/s", "vs other"]
    rows = []
    for r in records:
        im = r["impls"]
        perf = im["sslfast"].get("tflops")
        if perf is not None:
            perf_s = f"{perf:.3g} TFLOP/s" + _fmt_pct(im["sslfast"].get("pct_of_matmul"))
        elif im["sslfast"].get("gbps") is not None:
            perf_s = f"{im['sslfast']['gbps']:.3g} GB/s" + _fmt_pct(im["sslfast"].get("pct_of_copy_bw"))
        else:
            perf_s = "-"
        rows.append([
            r["op"] + (" *" if r.get("headline") and r["mode"] == "fwd+bwd" else ""),
            r["case"], r["mode"], str(r.get("backend") or "?"),
            _fmt_ms_range(im["sslfast"]), _fmt_ms(im["eager"]), _fmt_ms(im["compile"]),
            _fmt_x(r["speedup_vs_eager"]), _fmt_x(r["speedup_vs_compile"]),
            "/".join(_fmt_mib(im[n]) for n in IMPLS), "/".join(_fmt_mib(im[n], "scratch_mib") for n in IMPLS),
            perf_s,
            " ".join([f"{name} {_fmt_x(x)}" for name, x in (r.get("speedup_vs") or {}).items()]
                     + ([("" if r["target"]["met"] else "MISSED ") + r["target"]["text"]] if r.get("target") else []))
            or "-",
        ])
    return header, rows


def format_text_table(records) -> str:
    header, rows = table_rows(records)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(records) -> list:
    """The result table as Markdown lines: header, rule, one row per record."""
    header, rows = table_rows(records)
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def format_markdown(records, env: dict) -> str:
    lines = [
        "# sslfast benchmark results",
        "",
        f"- date: {env.get('date')}",
        f"- device: {env.get('device')} ({env.get('device_name')}), dtype {env.get('dtype')}",
        f"- torch {env.get('torch')}, triton {env.get('triton')}, python {env.get('python')}",
        f"- git commit: {env.get('git_commit')}",
        f"- CPUs: {env.get('cpu_count')} (affinity {env.get('cpu_affinity')}, "
        f"torch threads {env.get('torch_threads')})",
        f"- sslfast backend requested: {env.get('backend_requested')}, "
        f"C++ extension available: {env.get('native_available')}",
        *_ceiling_lines(env.get("ceilings")),
        "",
        "Times are medians over interleaved rounds; speedup = baseline median / sslfast median. "
        "`*` marks the headline case. Peak MiB is memory allocated on top of the inputs "
        "during one call; scratch MiB is that peak minus the returned tensors and input "
        "gradients (which every implementation must allocate).",
        "",
        *markdown_table(records),
    ]
    notes = sorted({r.get("model_note") for r in records if r.get("model_note")})
    if notes:
        lines += ["", "Performance models:", ""] + [f"- {n}" for n in notes]
    errors = _errors(records)
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def _ceiling_lines(ceilings) -> list:
    if not ceilings:
        return []
    return [f"- measured ceilings: copy {ceilings['copy_gbps']:.3g} GB/s ({ceilings['copy_mib']} MiB, "
            f"read + write), matmul {ceilings['matmul']} {ceilings['matmul_tflops']:.3g} TFLOP/s; "
            "percentages in the perf column are against these"]


def _errors(records) -> list:
    out = []
    for r in records:
        for name in r["impls"]:
            err = r["impls"][name].get("error")
            if err and not err.startswith("skipped"):
                out.append(f"{r['op']} {r['case']} {r['mode']} [{name}]: {err}")
    return out


def write_plot(records, path) -> str | None:
    """One row of panels per family: speedup of sslfast against eager and against torch.compile
    (log scale, horizontal bars labelled with the ratio) and peak extra memory of the three
    implementations. Horizontal bars keep every case label readable however many cases a family
    has (one long row of vertical bars grew to thousands of pixels). Returns a note if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as error:
        return f"matplotlib unavailable ({_error_text(error)}): no plot written"
    if not records:
        return "no records: no plot written"
    families = {}
    for r in records:
        families.setdefault(r.get("family") or "other", []).append(r)
    heights = [max(1.6, 0.36 * len(rs) + 0.9) for rs in families.values()]
    fig, axes = plt.subplots(len(families), 2, figsize=(15, sum(heights) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights, "width_ratios": (1.25, 1)},
                             constrained_layout=True)
    nan = float("nan")
    for (family, rs), (ax_speed, ax_mem) in zip(families.items(), axes):
        ys = list(range(len(rs)))[::-1]  # first case on top
        labels = [f"{r['op']} {r['case']} [{r['mode']}]" for r in rs]
        h = 0.38
        for off, key, name, color in ((h / 2, "speedup_vs_eager", "vs eager", "tab:blue"),
                                      (-h / 2, "speedup_vs_compile", "vs torch.compile", "tab:orange")):
            vals = [r.get(key) or nan for r in rs]
            # Bars grow from 1x: right = sslfast faster, left = slower.
            ax_speed.barh([y + off for y in ys], [v - 1.0 for v in vals], left=1.0, height=h,
                          color=color, label=name)
            for y, v in zip(ys, vals):
                if v == v:  # not nan
                    ax_speed.annotate(f"{v:.2g}x", (v, y + off), fontsize=7, va="center",
                                      ha="left" if v >= 1 else "right",
                                      xytext=(2 if v >= 1 else -2, 0), textcoords="offset points")
        ax_speed.axvline(1.0, color="black", linewidth=0.8)
        ax_speed.set_xscale("log")
        ax_speed.set_yticks(ys)
        ax_speed.set_yticklabels(labels, fontsize=7)
        ax_speed.set_title(f"{family}: speedup of sslfast ({rs[0]['device']}, {rs[0]['dtype']})", fontsize=9)
        ax_speed.legend(fontsize=7, loc="best")
        ax_speed.margins(x=0.15)
        h = 0.27
        for i, name in enumerate(IMPLS):
            vals = [r["impls"].get(name, {}).get("peak_mib") or nan for r in rs]
            ax_mem.barh([y + (1 - i) * h for y in ys], vals, height=h, label=name)
        ax_mem.set_xscale("log")
        ax_mem.set_xlim(left=0.01)  # fused kernels may allocate only a few bytes
        ax_mem.set_yticks(ys)
        ax_mem.set_yticklabels([])
        ax_mem.set_title(f"{family}: peak extra memory (MiB, log)", fontsize=9)
        ax_mem.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def replot(results_json: str, out: str | None = None) -> str:
    """Redraw results.png from a recorded results.json (e.g. a committed GPU run)."""
    with open(results_json) as f:
        records = json.load(f)["records"]
    path = out or os.path.join(os.path.dirname(results_json) or ".", "results.png")
    note = write_plot(records, path)
    if note:
        raise RuntimeError(note)
    return path


def _json_clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class Progress:
    """tqdm bar over cases on stderr, weighted by case cost; plain lines if tqdm is missing."""

    def __init__(self, cases, enabled=True):
        self.cases = cases
        top = max((c.cost for c in cases), default=1.0) or 1.0
        # A fixed per-case overhead (warm-up, compile) plus a share proportional to its cost.
        self.weights = [1.0 + 9.0 * c.cost / top for c in cases]
        self.total = sum(self.weights) or 1.0
        self.done = 0.0
        self.t0 = time.perf_counter()
        self.bar = None
        self.note = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100.0, file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        except Exception:
            self.note = "tqdm unavailable: plain progress lines"
            print(f"[sslfast.bench] {self.note}", file=sys.stderr)

    def start(self, i, case):
        desc = f"{case.op} {case.label}"
        if self.bar is not None:
            self.bar.set_description(f"[{i + 1}/{len(self.cases)}] {desc}")
        else:
            el = time.perf_counter() - self.t0
            frac = self.done / self.total
            eta = f", eta {el / frac * (1 - frac):.0f}s" if frac > 0 else ""
            print(f"[{i + 1}/{len(self.cases)}] {desc} (elapsed {el:.0f}s{eta})", file=sys.stderr,
                  flush=True)

    def finish(self, i, lines):
        self.done += self.weights[i]
        for text in lines:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)
        if self.bar is not None:
            self.bar.update(100.0 * self.weights[i] / self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _summary_line(rec) -> str:
    im = rec["impls"]
    parts = [f"  {rec['op']} {rec['case']} {rec['mode']}:"]
    for name in IMPLS:
        parts.append(f"{name} {_fmt_ms(im[name])}")
    parts.append(f"(x{rec['speedup_vs_eager']:.2f} vs eager)" if rec["speedup_vs_eager"] else "")
    return " ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sslfast.bench",
        description="Benchmark sslfast ops against eager PyTorch (sslfast.reference) and "
                    "torch.compile, forward and forward+backward, side by side in one run.")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda if available (default)")
    p.add_argument("--only", action="append", default=None, metavar="FAMILY[,FAMILY]",
                   help="run only these families (repeatable or comma-separated)")
    p.add_argument("--filter", default=None, metavar="TEXT",
                   help="run only cases whose 'op size' contains TEXT")
    p.add_argument("--quick", action="store_true",
                   help="fewer sizes and repeats (the headline case is always kept)")
    p.add_argument("--out", default="bench-results", help="output folder (default bench-results/)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per case and mode (default: adaptive to a time budget)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per implementation")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--dtype", choices=("auto",) + tuple(_DTYPES), default="auto",
                   help="default: float32 on cpu, bfloat16 on cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-ceilings", action="store_true",
                   help="skip measuring the device's copy bandwidth and matmul throughput")
    p.add_argument("--list", action="store_true", help="list the families and cases, then exit")
    p.add_argument("--replot", default=None, metavar="RESULTS_JSON",
                   help="only redraw results.png beside a recorded results.json, then exit")
    # Hidden: size set override for the harness's own tests (also SSLFAST_BENCH_SIZES).
    p.add_argument("--sizes", choices=SIZE_SETS, default=None, help=argparse.SUPPRESS)
    return p


def _resolve_device(name: str, parser) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return torch.device(name)


def select_sizes(args) -> str:
    return args.sizes or os.environ.get("SSLFAST_BENCH_SIZES") or ("quick" if args.quick else "full")


def select_cases(args, parser, device, dtype) -> list:
    families, broken = discover()
    available = sorted(set(families) | set(broken))
    if args.only:
        wanted = [w.strip() for chunk in args.only for w in chunk.split(",") if w.strip()]
        for name in wanted:
            if name in broken and name not in families:
                parser.error(f"family {name!r} failed to import: {broken[name]}")
            if name not in families:
                parser.error(f"unknown family {name!r} in --only; available families: "
                             f"{', '.join(available) or '(none)'}")
    else:
        wanted = sorted(families)
        for name, err in sorted(broken.items()):
            print(f"[sslfast.bench] warning: skipping family {name!r}: {err}", file=sys.stderr)
    sizes = select_sizes(args)
    if sizes not in SIZE_SETS:
        parser.error(f"SSLFAST_BENCH_SIZES must be one of {SIZE_SETS}, got {sizes!r}")
    ctx = Context(device=device, dtype=dtype, sizes=sizes)
    cases = []
    for name in wanted:
        cases.extend(families[name](ctx))
    if args.filter:
        cases = [c for c in cases if args.filter in f"{c.op} {c.label}"]
        if not cases:
            parser.error(f"--filter {args.filter!r} matches no case")
    return cases


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replot:
        if not os.path.isfile(args.replot):
            parser.error(f"--replot: no such file {args.replot!r}")
        try:
            path = replot(args.replot)
        except RuntimeError as error:  # matplotlib missing: a usage message and exit 2, not a traceback
            parser.error(f"--replot: {error}")
        print(f"[sslfast.bench] wrote {path}", file=sys.stderr)
        return 0
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    device = _resolve_device(args.device, parser)
    dtype = _DTYPES[args.dtype] if args.dtype != "auto" else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    cases = select_cases(args, parser, device, dtype)

    if args.list:
        for c in cases:
            print(f"{c.family:12s} {c.op:12s} {c.label:28s} {'headline' if c.headline else ''}")
        return 0

    plan = default_plan(device, args.quick, args.repeats, not args.no_compile)
    if args.warmup is not None:
        plan.warmup = max(0, args.warmup)
    env = environment(device, dtype)
    env["args"] = {k: v for k, v in vars(args).items()}
    env["plan"] = dataclasses.asdict(plan)
    notes = []
    if not env["native_available"]:
        notes.append("the C++ extension sslfast._C is not built: on CPU, sslfast runs its "
                     "reference backend, so speedups ~1x are expected")
    for n in notes:
        print(f"[sslfast.bench] note: {n}", file=sys.stderr)

    if not args.no_ceilings:
        try:
            env["ceilings"] = c = measure_ceilings(device, small=select_sizes(args) == "tiny")
            print(f"[sslfast.bench] ceilings: copy {c['copy_gbps']:.3g} GB/s, matmul {c['matmul']} "
                  f"{c['matmul_tflops']:.3g} TFLOP/s", file=sys.stderr)
        except (RuntimeError, MemoryError) as error:  # e.g. OOM on a shared GPU: cases still run
            _oom_cleanup(device)
            notes.append(f"ceilings not measured: {_error_text(error)}")
            print(f"[sslfast.bench] note: {notes[-1]}", file=sys.stderr)

    progress = Progress(cases, enabled=not args.no_progress)
    if progress.note:
        notes.append(progress.note)
    records = []
    t_start = time.perf_counter()
    try:
        for i, case in enumerate(cases):
            progress.start(i, case)
            recs = run_case(case, device, dtype, plan)
            records.extend(recs)
            progress.finish(i, [_summary_line(r) for r in recs])
    finally:
        progress.close()
    env["wall_s"] = round(time.perf_counter() - t_start, 1)
    add_ceiling_fractions(records, env.get("ceilings") or {})

    print(f"sslfast.bench: {env['device']} ({env['device_name']}), {env['dtype']}, "
          f"torch {env['torch']}, backend {env['backend_requested']}, "
          f"C++ extension {'built' if env['native_available'] else 'NOT built'}")
    print(format_text_table(records))
    errors = _errors(records)
    for e in errors:
        print(f"[sslfast.bench] error: {e}", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    plot_note = write_plot(records, os.path.join(args.out, "results.png"))
    if plot_note:
        notes.append(plot_note)
        print(f"[sslfast.bench] note: {plot_note}", file=sys.stderr)
    env["notes"] = notes
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(_json_clean({"environment": env, "records": records}), f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(format_markdown(records, env))
    print(f"[sslfast.bench] wrote {args.out}/results.{{json,md}}"
          + ("" if plot_note else ", results.png") + f" in {env['wall_s']}s", file=sys.stderr)
    # Failures of sslfast itself are bugs; baseline failures (OOM, compile) are only reported.
    return 1 if any(r["impls"]["sslfast"].get("error") for r in records) else 0
