"""The CPU kernels' instruction sets (csrc/cpu/isa.h): the extension is built for the baseline of
its target, with AVX2 + FMA paths picked at load time. A build made on one x86-64 machine must run
on any other, and both paths must compute the same results."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sslfast
from sslfast import _native

ROOT = Path(__file__).resolve().parents[1]
X86 = os.uname().machine in ("x86_64", "AMD64")
pytestmark = pytest.mark.skipif(not _native.AVAILABLE, reason="the C++ extension is not built")


def _library():
    return Path(sslfast._C.__file__)


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="x86-64 with objdump")
def test_no_avx_instruction_outside_the_avx2_kernels():
    """Only functions of namespace sslfast::cpu::avx2 (and the AVX-512 build of the dropout keep
    factors, csrc/cpu/keep_factors.h) may hold AVX (VEX / EVEX) instructions: the rest of the
    library runs on any x86-64 CPU, and those functions only run on CPUs that have the extensions."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(_library())],
                             capture_output=True, text=True, check=True).stdout
    function, offenders, avx2_instructions = None, {}, 0
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            continue
        parts = line.split("\t")
        if function is None or len(parts) < 2:
            continue
        mnemonic = parts[1].split()[0] if parts[1].split() else ""
        if mnemonic.startswith("v") and mnemonic not in ("verr", "verw"):
            if "sslfast::cpu::avx2::" in function:
                avx2_instructions += 1
            elif not function.startswith("sslfast::cpu::keep_detail::avx512("):
                offenders[function] = mnemonic
    assert not offenders, f"AVX instructions outside the avx2 kernels: {list(offenders.items())[:5]}"
    assert avx2_instructions > 1000  # the AVX2 paths exist (and the check can see them)


def test_cpu_isa_is_picked_at_load_time():
    expected = "avx2" if X86 and "avx2" in Path("/proc/cpuinfo").read_text() else "baseline"
    assert _native.cpu_isa() == expected
    code = "import sslfast; print(sslfast._native.cpu_isa())"
    env = dict(os.environ, SSLFAST_CPU_ISA="baseline")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "baseline", out.stderr[-2000:]


_CALLS = '''
import json, sys, torch, sslfast
from sslfast.diffusion import NoiseSchedule, q_sample, diffusion_loss, ddim_step
torch.manual_seed(0)
results = {}
def record(name, fn, *inputs):
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    out = out[0] if isinstance(out, tuple) else out
    grads = []
    if out.requires_grad:
        out.float().sum().backward()
        grads = [x.grad.tolist() for x in leaves if x.grad is not None]
    results[name] = [out.detach().double().tolist()] + grads
for dtype in (torch.float32, torch.float64):
    z1, z2 = torch.randn(70, 33, dtype=dtype), torch.randn(70, 33, dtype=dtype)
    s, b = torch.tensor(7.0, dtype=dtype), torch.tensor(-2.0, dtype=dtype)
    labels = torch.randint(0, 5, (70,))
    d = str(dtype)
    record("nt_xent" + d, lambda a, c: sslfast.nt_xent(a, c, 0.2), z1, z2)
    record("info_nce" + d, lambda a, c: sslfast.info_nce(a, c, 0.1, z2[:20]), z1, z2)
    record("clip" + d, sslfast.clip_loss, z1, z2, s, b)
    record("siglip" + d, sslfast.siglip_loss, z1, z2, s, b)
    record("supcon" + d, lambda a: sslfast.supcon(a, labels, 0.3), z1)
    x = torch.randn(3, 17, 9, dtype=dtype)
    record("masking" + d, lambda a: sslfast.random_masking(a, 0.5, noise=torch.rand(3, 17))[0], x)
    imgs, pred = torch.randn(2, 3, 8, 8, dtype=dtype), torch.randn(2, 4, 48, dtype=dtype)
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]])
    record("patch_loss" + d, lambda p: sslfast.masked_patch_loss(p, imgs, mask, 4), pred)
    sched = NoiseSchedule(100)
    t = torch.tensor([3, 50])
    record("q_sample" + d, lambda a: q_sample(a, t, sched, seed=11)[0], torch.randn(2, 3, 5, 5, dtype=dtype))
    record("loss" + d, lambda m: diffusion_loss(m, torch.ones_like(m), t, sched, snr_gamma=5.0),
           torch.randn(2, 40, dtype=dtype))
    edges = torch.randint(0, 30, (2, 200))
    g = sslfast.Graph.from_edge_index(edges, 30)
    record("spmm" + d, lambda a: sslfast.spmm(g, a, "max"), torch.randn(30, 24, dtype=dtype))
    record("gcn" + d, lambda a: sslfast.gcn_aggregate(g, a), torch.randn(30, 24, dtype=dtype))
    record("gat" + d, lambda h, a, c: sslfast.gat_aggregate(g, h, a, c), torch.randn(30, 8, 8, dtype=dtype),
           torch.randn(30, 8, dtype=dtype), torch.randn(30, 8, dtype=dtype))
    # the keep factors' AVX-512 build (keep_factors.h) against the scalar one: the same mask bits
    record("drop" + d, lambda a: sslfast.drop_mask(a, 0.3, seed=5), torch.randn(70, 333, dtype=dtype))
    record("drop_columns" + d, lambda a: sslfast.drop_mask(a, 0.3, per_column=True, seed=5),
           torch.randn(7, 333, dtype=dtype))
json.dump(results, sys.stdout)
'''


def _run(isa):
    env = dict(os.environ, SSLFAST_CPU_ISA=isa, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CALLS], env=env, capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not X86, reason="one instruction set only")
def test_baseline_and_avx2_paths_agree():
    """Every family's kernels, forward and backward, on both paths (the drop mask: with and without
    its AVX-512 keep factors, where the CPU has AVX-512): float64 agrees to rounding,
    float32 within the float32 error of the vectorized exp / log (a few ulp). In-kernel noise is a
    float32 stream in every dtype (Box-Muller as Triton's randn4x), so q_sample agrees to float32."""
    baseline, avx2 = _run("baseline"), _run("auto")
    assert baseline.keys() == avx2.keys()
    for name in baseline:
        for got, want in zip(baseline[name], avx2[name]):
            got, want = torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
            exact = "float64" in name and not name.startswith("q_sample")
            tol = dict(rtol=1e-10, atol=1e-12) if exact else dict(rtol=2e-5, atol=2e-6)
            torch.testing.assert_close(got, want, **tol, msg=name)
