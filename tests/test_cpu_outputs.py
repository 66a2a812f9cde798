"""Large CPU outputs are marked for transparent huge pages (csrc/cpu/alloc.h).

The hint must change where the pages come from, never a value: each op's outputs are compared
bitwise with SSLFAST_HUGE_PAGES=0, and the output's mapping must carry the kernel's "hg"
(MADV_HUGEPAGE) flag in /proc/self/smaps. That flag is set by the madvise call itself, whether
or not the kernel then finds free huge pages, so the check does not depend on memory pressure.
"""

import os

import pytest
import torch

import sslfast
from sslfast import _native
from sslfast.graph import Graph

pytestmark = pytest.mark.skipif(not _native.AVAILABLE, reason="sslfast._C not built")

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
HAS_THP = os.path.exists(THP) and "[never]" not in open(THP).read()
BIG = 4 << 20  # alloc.h's kMinBytes


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
    edge_index = torch.randint(0, x.shape[0], (2, 8 * x.shape[0]))
    return sslfast.spmm(Graph.from_edge_index(edge_index, num_nodes=x.shape[0]), x)


def _masking_backward(x):
    x = x.requires_grad_()
    torch.manual_seed(0)
    visible, _, _ = sslfast.random_masking(x, 0.75)
    visible.backward(torch.ones_like(visible))
    return x.grad


def _q_sample(x):
    schedule = sslfast.diffusion.NoiseSchedule(1000, "linear", 1e-4, 0.02)
    return sslfast.ops.diffusion.q_sample(x, torch.arange(x.shape[0]) * 50, schedule, seed=3)


CASES = {
    "spmm": (_spmm, (20_000, 64)),  # 5 MiB output
    "random_masking backward": (_masking_backward, (16, 196, 512)),  # 6 MiB gradient
    "q_sample": (_q_sample, (16, 4, 128, 128)),  # 4 MiB x_t
}


@pytest.mark.parametrize("name", list(CASES))
def test_large_outputs_are_identical_without_the_hint(name, monkeypatch):
    run, shape = CASES[name]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    monkeypatch.delenv("SSLFAST_HUGE_PAGES", raising=False)
    with_hint = run(x.clone())
    monkeypatch.setenv("SSLFAST_HUGE_PAGES", "0")
    without = run(x.clone())
    for a, b in zip(torch.utils._pytree.tree_leaves(with_hint), torch.utils._pytree.tree_leaves(without)):
        assert torch.equal(a, b)


# torch under THP_MEM_ALLOC_ENABLE=1 advises every allocation itself: the check would prove nothing
@pytest.mark.skipif(not HAS_THP or not os.path.exists("/proc/self/smaps") or os.environ.get("THP_MEM_ALLOC_ENABLE"),
                    reason="no transparent huge pages, or torch advises them itself")
@pytest.mark.parametrize("name", list(CASES))
def test_large_outputs_are_advised_huge_pages(name, monkeypatch):
    monkeypatch.delenv("SSLFAST_HUGE_PAGES", raising=False)
    run, shape = CASES[name]
    out = torch.utils._pytree.tree_leaves(run(torch.randn(*shape)))[0]
    assert out.nbytes >= BIG
    assert huge_page_advised(out)
