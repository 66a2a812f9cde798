"""sslfast.nn.NTXentLoss as pytorch-metric-learning's ``loss(embeddings, labels)`` and as lightly's
``loss(out0, out1)``: the same values and gradients as their own NTXentLoss modules.

``import lightly.loss`` pulls torchvision (not installable beside this CPU torch), so lightly's
ntx_ent_loss.py is loaded from its file with stand-ins for the two lightly modules it imports
(the memory bank, unused at memory_bank_size=0, and lightly.utils.dist, loaded from its own file);
sys.modules is restored afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import pytest
import torch

import sslfast
from helpers import DEVICE, randn


def _grads(loss_fn, *inputs):
    leaves = [t.clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
    loss = loss_fn(*leaves)
    return loss, torch.autograd.grad(loss, [t for t in leaves if t.is_floating_point()])


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("classes", [2, 5, 40])
def test_pml_embeddings_labels(temperature, classes):
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    x = randn(40, 12, seed=classes, device=DEVICE)
    labels = torch.randint(0, classes, (40,), generator=torch.Generator().manual_seed(classes)).to(DEVICE)
    v1, g1 = _grads(sslfast.nn.NTXentLoss(temperature), x, labels)
    v2, g2 = _grads(losses.NTXentLoss(temperature=temperature), x, labels)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-10)
    torch.testing.assert_close(g1[0], g2[0], rtol=0, atol=1e-10)
    # the mapping: PML's NTXentLoss is the pairwise (per positive pair) supervised loss
    torch.testing.assert_close(v1, sslfast.supcon(x, labels, temperature, pairwise=True))


def test_pml_int32_labels_and_no_positives():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    x = randn(10, 6, seed=1, device=DEVICE)
    labels = torch.arange(10, dtype=torch.int32, device=DEVICE)
    torch.testing.assert_close(sslfast.nn.NTXentLoss(0.1)(x, labels),
                               losses.NTXentLoss(0.1)(x, labels.long()).to(torch.float64))


def _load_lightly_ntxent():
    spec = importlib.util.find_spec("lightly")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lightly is not installed")
    root = list(spec.submodule_search_locations)[0]
    names = ["lightly", "lightly.models", "lightly.models.modules", "lightly.models.modules.memory_bank",
             "lightly.utils", "lightly.utils.dist"]
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name in names[:-1]:
            stub = types.ModuleType(name)
            stub.__path__ = []
            sys.modules[name] = stub

        class MemoryBankModule(torch.nn.Module):  # memory_bank_size=0: lightly's bank returns (out, None)
            def __init__(self, size=0, gather_distributed=False):
                super().__init__()
                assert size == 0

            def forward(self, output, labels=None, update=False):
                return output, None

        sys.modules["lightly.models.modules.memory_bank"].MemoryBankModule = MemoryBankModule
        dist_spec = importlib.util.spec_from_file_location("lightly.utils.dist", os.path.join(root, "utils", "dist.py"))
        dist_module = importlib.util.module_from_spec(dist_spec)
        sys.modules["lightly.utils.dist"] = dist_module
        dist_spec.loader.exec_module(dist_module)
        sys.modules["lightly.utils"].dist = dist_module
        loss_spec = importlib.util.spec_from_file_location("_sslfast_test_lightly_ntx_ent_loss",
                                                           os.path.join(root, "loss", "ntx_ent_loss.py"))
        module = importlib.util.module_from_spec(loss_spec)
        loss_spec.loader.exec_module(module)
        return module.NTXentLoss
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_lightly_two_views(temperature):
    before = {name: sys.modules.get(name) for name in ("lightly", "lightly.utils", "lightly.utils.dist")}
    lightly_ntxent = _load_lightly_ntxent()
    assert {name: sys.modules.get(name) for name in before} == before  # the stand-ins are gone
    z1, z2 = randn(16, 9, seed=7, device=DEVICE), randn(16, 9, seed=8, device=DEVICE)
    v1, g1 = _grads(sslfast.nn.NTXentLoss(temperature), z1, z2)
    v2, g2 = _grads(lightly_ntxent(temperature=temperature), z1, z2)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-10)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_ntxent_rejects_unsupported_arguments():
    x = randn(4, 3, seed=0, device=DEVICE)
    with pytest.raises(ValueError, match="memory_bank_size"):
        sslfast.nn.NTXentLoss(memory_bank_size=128)
    with pytest.raises(ValueError, match="indices_tuple"):
        sslfast.nn.NTXentLoss()(x, torch.arange(4, device=DEVICE), indices_tuple=(1, 2))
    with pytest.raises(TypeError, match="process_group"):
        sslfast.nn.NTXentLoss(process_group=1)
    with pytest.raises(ValueError, match="labels"):  # labels of the wrong length, named
        sslfast.nn.NTXentLoss()(x, torch.arange(5, device=DEVICE))


def test_ntxent_positional_arguments_are_lightlys():
    """lightly 1.6: NTXentLoss(temperature, memory_bank_size, gather_distributed); a positional
    memory bank size must not land in another argument."""
    import inspect

    names = [p.name for p in inspect.signature(sslfast.nn.NTXentLoss.__init__).parameters.values()
             if p.kind == p.POSITIONAL_OR_KEYWORD][1:]
    assert names == ["temperature", "memory_bank_size", "gather_distributed"]
    with pytest.raises(ValueError, match="memory_bank_size"):
        sslfast.nn.NTXentLoss(0.5, 16)
    loss = sslfast.nn.NTXentLoss(0.5, 0, False)
    assert loss.normalize is True and loss.gather_distributed is False
    with pytest.raises(TypeError, match="normalize"):
        sslfast.nn.NTXentLoss(normalize=16)
    with pytest.raises(TypeError, match="exclude_positive"):
        sslfast.nn.NTXentLoss(exclude_positive=1)
    with pytest.raises(TypeError, match="gather_distributed"):
        sslfast.nn.NTXentLoss(0.5, 0, "yes")


def test_ntxent_labels_with_exclude_positive_raises():
    x = torch.randn(6, 4, device=DEVICE)
    with pytest.raises(ValueError, match="exclude_positive"):
        sslfast.nn.NTXentLoss(exclude_positive=True)(x, torch.tensor([0, 0, 1, 1, 2, 2], device=DEVICE))
