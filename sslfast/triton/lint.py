"""GPU lint without a GPU: every Triton kernel compiled ahead of time for sm_90 (H100 / H200).

``python -m sslfast.triton.lint [--write benchmarks/gpu_lint.json]`` runs the launchers of every
Triton family on small CPU tensors with kernel launches intercepted, so each launch yields the
exact (signature, constexprs, options) a GPU run would compile, for every autotune config the
launch may pick. Each is compiled by ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` with
Triton's bundled ptxas, and the PTX and ptxas's ``-v`` report give: registers, spill bytes, stack
frame, shared memory, and whether the dot products are ``wgmma`` (Hopper's warpgroup MMA) or
``mma.sync`` (the Ampere path, a fraction of Hopper's peak). A kernel with a ``tl.dot`` must use
wgmma and must not spill; ``tests/test_gpu_lint.py`` fails otherwise, and when the recorded
table (``benchmarks/gpu_lint.json``) is stale.

The contrastive launches are bf16 at D = 128 (resident rows), 256 (the widest fused backward)
and 512 (D streamed, G + cuBLAS backward); SupCon's with 100 classes, both of its forms. fp32
contrastive launches use IEEE-exact FMA dots by design (no tensor cores) and fp64 a broadcast
product, so neither is held to the wgmma rule.

Must run without ``TRITON_INTERPRET=1`` (the interpreter replaces the compiler); the test runs
it in a subprocess. Results are cached by the compile's own hash (kernel source, constexprs,
signature, options, Triton version) in ``build/gpu-lint-cache.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    raise RuntimeError("sslfast.triton.lint compiles for a GPU: run it without TRITON_INTERPRET=1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "gpu-lint-cache.json"
RECORD = ROOT / "benchmarks" / "gpu_lint.json"
# What a kernel may use and still fit: 227 KB of shared memory per block on sm_90.
SM90_SHARED_LIMIT = 232448

_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


# ---------------------------------------------------------------------------------------------
# Recording launches
# ---------------------------------------------------------------------------------------------


class _Recorder:
    """Intercepts JITFunction.run and Autotuner.run: a launch is recorded, not executed (outputs
    stay uninitialized, which no launcher reads on the host)."""

    def __init__(self):
        self.launches = []  # (family, JITFunction, args, kwargs)
        self.family = None

    def __enter__(self):
        recorder = self
        self._jit_run, self._tuner_run = JITFunction.run, Autotuner.run

        def jit_run(fn, *args, grid, warmup, **kwargs):
            recorder.launches.append((recorder.family, fn, args, kwargs))

        def tuner_run(tuner, *args, grid=None, warmup=False, **kwargs):
            tuner.nargs = dict(zip(tuner.arg_names, args))
            for config in tuner.prune_configs(kwargs):
                recorder.launches.append((recorder.family, tuner.fn, args, {**kwargs, **config.all_kwargs()}))
            tuner.nargs = None

        JITFunction.run, Autotuner.run = jit_run, tuner_run
        return self

    def __exit__(self, *exc):
        JITFunction.run, Autotuner.run = self._jit_run, self._tuner_run


def _exercise_contrastive():
    from . import contrastive as tk

    n = 384  # three 128-row blocks: not 1, not a power of two
    one = torch.ones((), dtype=torch.float32)
    for d in (128, 256, 512):
        def t(rows, d=d):
            return torch.zeros(rows, d, dtype=torch.bfloat16)
        z, q, k, queue, image, text = t(n), t(n), t(n), t(2 * n), t(n), t(n)
        lse = torch.zeros(n)
        if d != 256:  # the forwards have two shape classes: resident (<= 128) and streamed
            tk.nt_xent_fwd(z, 0.5, False)
            tk.info_nce_fwd(q, k, queue, 0.07, True, False)
            tk.clip_loss_fwd(image, text, one * 14.0, one)
            tk.siglip_loss_fwd(image, text, one * 10.0, -one, False)
        if d == 128:
            tk.nt_xent_fwd(z, 0.01, True)  # 1/T past the fixed shift's range: online rows
        tk.info_nce_fwd(q, k, queue, 0.07, False, True)  # MoCo: the fold (in-kernel when D <= 256)
        tk.nt_xent_bwd(one, z, lse, 0.5, False)
        tk.info_nce_bwd(one, q, k, queue, lse, torch.zeros(0), 0.07, True)
        tk.clip_loss_bwd(one, image, text, one * 14.0, one, lse, lse)
        tk.siglip_loss_fwd(image, text, one * 10.0, -one, True)
        labels = torch.arange(n) % 100  # 100 classes, the bench's
        for pairwise in (False, True):  # SupCon: Khosla, then pytorch-metric-learning's pairwise
            if d != 256:
                tk.supcon_fwd(z, labels, 0.1, pairwise)
            if d == 128:
                tk.supcon_fwd(z, labels, 0.01, pairwise)  # 1/T past the fixed shift's range: online rows
            tk.supcon_bwd(one, z, labels, lse, torch.zeros(2, n), 0.1, pairwise)


def _exercise_masking():
    import sslfast

    x = torch.zeros(4, 1 + 196, 768)
    pos = torch.zeros(1, 1 + 196, 768)
    token = torch.zeros(1, 1, 768)
    vis, _, ids = sslfast.random_masking(x, 0.75, generator=torch.Generator().manual_seed(0),
                                         pos_embed=pos, num_prefix_tokens=1)
    vis.requires_grad_(True)
    token.requires_grad_(True)
    sslfast.unshuffle(vis, ids.clamp(0, 48), token, pos_embed=pos, num_prefix_tokens=1).sum().backward()
    imgs = torch.zeros(2, 3, 32, 32)
    mask = (torch.arange(4) % 2).float().expand(2, 4).contiguous()
    for loss in ("l2", "l1"):
        pred = torch.zeros(2, 4, 768, requires_grad=True)
        sslfast.masked_patch_loss(pred, imgs, mask, 16, loss=loss).backward()


def _exercise_diffusion():
    from sslfast import diffusion as D

    s = D.NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012)
    s.set_timesteps(10, "trailing")
    sig = s.sigmas_for(s.timesteps)
    x, m, u, p = (torch.zeros(4, 4, 16, 16) for _ in range(4))
    t = torch.arange(4) * 100
    x0, pred = x.clone().requires_grad_(), m.clone().requires_grad_()
    x_t, v = D.q_sample(x0, t, s, seed=11, target="v_prediction")
    loss = D.diffusion_loss(pred, v, t, s, prediction_type="v_prediction", snr_gamma=5.0)
    (loss + x_t.mean()).backward()
    with torch.no_grad():
        D.ddim_step(m, s.timesteps[3], x, s, eta=0.5, seed=3, uncond=u, guidance_scale=2.0, clip_sample=True)
        D.ddpm_step(m, s.timesteps[3], x, s, noise=u, prediction_type="v_prediction")
        D.euler_step(m, x, sig[3], sig[4], uncond=u, guidance_scale=3.0)
        D.dpmpp_2m_step(m, x, sig[3].expand(4), sig[4], p, sig[2])


def _exercise_augment():
    import sslfast

    images = torch.zeros(4, 3, 32, 32, requires_grad=True)
    boxes = torch.tensor([[0, 0, 32, 32], [4, 2, 20, 28], [1, 1, 8, 8], [0, 5, 31, 25]])
    flips = torch.tensor([True, False, True, False])
    sslfast.augment_images(images, boxes, flips, size=24, noise_std=0.1, seed=7).sum().backward()
    sslfast.augment_images(images.detach(), boxes, flips, size=32)
    x = torch.zeros(100, 64)
    sslfast.drop_mask(x, 0.2, seed=3)
    sslfast.drop_mask(x, 0.2, seed=3, per_column=True)


_FAMILIES = {"contrastive": _exercise_contrastive, "masking": _exercise_masking,
             "diffusion": _exercise_diffusion, "augment": _exercise_augment}


def record_launches():
    """Every kernel launch (and autotune config) the exercises make, deduplicated."""
    import sslfast
    from .. import _dispatch

    can_run = _dispatch.triton_can_run
    _dispatch.triton_can_run = lambda device_type: True  # the public functions pick Triton on CPU
    try:
        with _Recorder() as recorder:
            for family, exercise in _FAMILIES.items():
                recorder.family = family
                with sslfast.use_backend("triton"):
                    exercise()
    finally:
        _dispatch.triton_can_run = can_run
        _dispatch.refresh()
    return recorder.launches


def all_kernels():
    """(family, name) of every top-level Triton kernel of the families (what the lint must cover)."""
    from . import augment, contrastive, diffusion, masking

    found = set()
    for family, module in (("contrastive", contrastive), ("masking", masking), ("diffusion", diffusion),
                           ("augment", augment)):
        for name, obj in vars(module).items():
            fn = obj.fn if isinstance(obj, Autotuner) else obj
            if isinstance(fn, JITFunction) and name.endswith("_kernel"):
                found.add((family, name))
    return found


# ---------------------------------------------------------------------------------------------
# Compiling
# ---------------------------------------------------------------------------------------------


def _describe(fn, signature, constexprs, options):
    names = fn.arg_names
    pointer_dtypes = sorted({v[1:] for k, v in signature.items() if isinstance(v, str) and v.startswith("*")})
    consts = {names[path[0]]: value for path, value in constexprs.items() if len(path) == 1}
    shown = {k: (str(v) if not isinstance(v, (bool, int, float)) else v) for k, v in consts.items()
             if k not in ("ACC_DTYPE", "DOT_PRECISION", "UPCAST_BF16", "D_CLASS")}
    return {"pointer_dtypes": pointer_dtypes, "constexprs": shown,
            "num_warps": options.num_warps, "num_stages": options.num_stages}


def _compile(fn, args, kwargs):
    backend = make_backend(TARGET)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    src = ASTSource(fn, signature, constexprs, attrs)
    key = hashlib.sha256(f"{src.hash()}|{options.hash()}|{triton.__version__}".encode()).hexdigest()
    return src, options, key, _describe(fn, signature, constexprs, options)


def _measure(src, options):
    from triton import knobs

    knobs.nvidia.dump_ptxas_log = True
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its report
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(src, target=TARGET, options=options.__dict__)
    seconds = time.perf_counter() - start
    report = log.getvalue()
    regs = _PTXAS_REGS.search(report)
    frame = _PTXAS_FRAME.search(report)
    if not (regs and frame):
        raise RuntimeError(f"no ptxas resource report for {src.name}:\n{report}")
    ptx = compiled.asm["ptx"]
    return {
        "registers": int(regs.group(1)),
        "stack_bytes": int(frame.group(1)),
        "spill_store_bytes": int(frame.group(2)),
        "spill_load_bytes": int(frame.group(3)),
        "shared_bytes": int(compiled.metadata.shared),
        "wgmma": "wgmma.mma_async" in ptx,
        "mma_sync": "mma.sync" in ptx,
        "compile_seconds": round(seconds, 2),
    }


def _uses_dot(fn):
    """Whether the kernel (or a jit helper it calls) issues tl.dot: by the helpers it names."""
    from . import contrastive

    if fn.__module__ != contrastive.__name__:
        return "tl.dot" in fn.src
    return any(f"{name}(" in fn.src for name in ("_dot", "_scores"))


def lint(progress=True):
    """Compile every recorded launch; returns the table (one row per kernel + config)."""
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    rows = {}
    for family, fn, args, kwargs in record_launches():
        src, options, key, description = _compile(fn, args, kwargs)
        if key in rows:
            continue
        if key not in cache:
            if progress:
                print(f"  compiling {fn.__name__} {description['constexprs']}", file=sys.stderr, flush=True)
            cache[key] = _measure(src, options)
        result = dict(cache[key])
        result["dot"] = _uses_dot(fn)
        dot_dtypes = set(description["pointer_dtypes"])
        # fp32 contrastive dots are IEEE FMA by design and fp64 a product-sum: not tensor-core work
        result["tensor_core_dtype"] = bool(dot_dtypes & {"bf16", "fp16"})
        rows[key] = {"family": family, "kernel": fn.__name__, **description, **result}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
    table = sorted(rows.values(), key=lambda r: (r["family"], r["kernel"], json.dumps(r["constexprs"], sort_keys=True),
                                                  r["num_warps"], r["num_stages"]))
    return table


def violations(table, check_coverage=True):
    """What fails the lint: a tensor-core dot kernel without wgmma (or with mma.sync), any spill,
    shared memory past sm_90's limit, a kernel of a family that no launch covered."""
    problems = []
    for row in table:
        label = f"{row['kernel']} {row['constexprs']} warps={row['num_warps']} stages={row['num_stages']}"
        if row["dot"] and row["tensor_core_dtype"] and (not row["wgmma"] or row["mma_sync"]):
            problems.append(f"{label}: dot without wgmma (mma.sync={row['mma_sync']})")
        if row["spill_store_bytes"] or row["spill_load_bytes"]:
            problems.append(f"{label}: spills {row['spill_store_bytes']} B stored / {row['spill_load_bytes']} B loaded")
        if row["shared_bytes"] > SM90_SHARED_LIMIT:
            problems.append(f"{label}: {row['shared_bytes']} B shared memory > {SM90_SHARED_LIMIT}")
    covered = {(row["family"], row["kernel"]) for row in table}
    for family, name in sorted(all_kernels() - covered if check_coverage else ()):
        problems.append(f"{family}.{name}: never launched by the lint's exercises")
    return problems


def record_view(table):
    """The recorded form: what benchmarks/gpu_lint.json holds (compile times dropped)."""
    return [{k: v for k, v in row.items() if k != "compile_seconds"} for row in table]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write the table (JSON) here, e.g. benchmarks/gpu_lint.json")
    parser.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    args = parser.parse_args(argv)
    table = lint()
    if args.json:
        print(json.dumps({"triton": triton.__version__, "target": "sm_90", "table": record_view(table),
                          "violations": violations(table)}))
    else:
        for row in table:
            print(f"{row['family']:12s} {row['kernel']:28s} w{row['num_warps']} s{row['num_stages']} "
                  f"regs {row['registers']:3d} spill {row['spill_store_bytes']:5d} smem {row['shared_bytes']:6d} "
                  f"wgmma {row['wgmma']!s:5s} {row['constexprs']}")
        for problem in violations(table):
            print("VIOLATION:", problem)
    if args.write:
        args.write.write_text(json.dumps({"triton": triton.__version__, "target": "sm_90 (GPUTarget('cuda', 90, 32))",
                                          "table": record_view(table)}, indent=1, sort_keys=True) + "\n")
    return 1 if violations(table) else 0


if __name__ == "__main__":
    sys.exit(main())
