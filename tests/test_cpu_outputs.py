"""Large CPU outputs are marked for transparent huge pages (csrc/cpu/alloc.h).

The hint must change where the pages come from, never a value: each op's outputs are compared
bitwise with SSLFAST_HUGE_PAGES=0. The output's mapping must carry the kernel's "hg"
(MADV_HUGEPAGE) flag in /proc/self/smaps with the hint and must not carry it without. The flag
is set by the madvise call itself, whether or not the kernel then finds free huge pages, so the
check does not depend on memory pressure. Outputs here are >= 32 MiB, the hint's threshold. The
flag check runs in a fresh interpreter: in a fresh process glibc maps each such output on its own
and unmaps it on free, so no flag left by an earlier allocation can make the check pass (after a
long test session it could: see the test).
"""

import os
import subprocess
import sys

import pytest
import torch

import sslfast
from sslfast import _native
from sslfast.graph import Graph

pytestmark = pytest.mark.skipif(not _native.AVAILABLE, reason="sslfast._C not built")

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
HAS_THP = os.path.exists(THP) and "[never]" not in open(THP).read()
BIG = 32 << 20  # alloc.h's kMinBytes


def vm_flags(address):
    """VmFlags of the mapping of this process that contains ``address``."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(part, 16) for part in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def huge_page_advised(t):
    # the hint covers the 2 MiB-aligned interior of the allocation: look at its first byte
    huge = 2 << 20
    first = (t.data_ptr() + huge - 1) // huge * huge
    assert first + huge <= t.data_ptr() + t.nbytes
    return "hg" in vm_flags(first)


def _spmm(x):
    torch.manual_seed(0)
    edge_index = torch.randint(0, x.shape[0], (2, 4 * x.shape[0]))
    return sslfast.spmm(Graph.from_edge_index(edge_index, num_nodes=x.shape[0]), x)


def _masking_backward(x):
    x = x.requires_grad_()
    torch.manual_seed(0)
    visible, _, _ = sslfast.random_masking(x, 0.75)
    visible.backward(torch.ones_like(visible))
    return x.grad


def _q_sample(x):
    schedule = sslfast.diffusion.NoiseSchedule(1000, "linear", 1e-4, 0.02)
    return sslfast.ops.diffusion.q_sample(x, torch.arange(x.shape[0]) * 10, schedule, seed=3)


CASES = {  # each first output is >= 32 MiB
    "spmm": (_spmm, (70_000, 128)),
    "random_masking backward": (_masking_backward, (64, 196, 768)),
    "q_sample": (_q_sample, (64, 4, 256, 128)),
}


def first_output(name, x):
    run, _ = CASES[name]
    with sslfast.use_backend("native"):
        return torch.utils._pytree.tree_leaves(run(x))


@pytest.mark.parametrize("name", list(CASES))
def test_large_outputs_are_identical_without_the_hint(name, monkeypatch):
    x = torch.randn(*CASES[name][1], generator=torch.Generator().manual_seed(1))
    monkeypatch.delenv("SSLFAST_HUGE_PAGES", raising=False)
    with_hint = first_output(name, x.clone())
    assert with_hint[0].nbytes >= BIG
    monkeypatch.setenv("SSLFAST_HUGE_PAGES", "0")
    without = first_output(name, x.clone())
    for a, b in zip(with_hint, without):
        assert torch.equal(a, b)


# torch under THP_MEM_ALLOC_ENABLE=1 advises every allocation itself: the check would prove nothing
@pytest.mark.skipif(not HAS_THP or not os.path.exists("/proc/self/smaps") or os.environ.get("THP_MEM_ALLOC_ENABLE"),
                    reason="no transparent huge pages, or torch advises them itself")
@pytest.mark.parametrize("name", list(CASES))
def test_large_outputs_are_advised_huge_pages(name):
    # In a fresh interpreter: after a whole test session, glibc's allocator state (raised mmap
    # threshold, reused heap ranges that an earlier output advised) can hand the unhinted output
    # memory that already carries the flag, which says nothing about the hint (seen in full runs).
    script = f"""
import os, sys, torch
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_cpu_outputs as t
x = torch.randn(*t.CASES[{name!r}][1])
os.environ.pop("SSLFAST_HUGE_PAGES", None)
print(t.huge_page_advised(t.first_output({name!r}, x.clone())[0]))
os.environ["SSLFAST_HUGE_PAGES"] = "0"
print(t.huge_page_advised(t.first_output({name!r}, x.clone())[0]))
"""
    env = {k: v for k, v in os.environ.items() if k != "SSLFAST_HUGE_PAGES"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "False"]
