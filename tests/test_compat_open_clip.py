"""sslfast.nn.ClipLoss / SigLipLoss as open_clip's loss modules: the same constructor arguments,
``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False)``,
and the same loss and gradients as open_clip's own loss.py (single process here; the gloo
distributed parity is in tests/test_distributed.py).

``import open_clip`` pulls torchvision, which cannot be installed beside this CPU torch, so only
open_clip/loss.py is loaded, from its file, under another module name.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

import sslfast
from helpers import DEVICE, randn


def _open_clip_loss_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "loss.py")
    if not os.path.isfile(path):
        pytest.skip(f"open_clip has no loss.py at {path}")
    module_spec = importlib.util.spec_from_file_location("_sslfast_test_open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def open_clip_loss():
    return _open_clip_loss_module()


def _pair(n=9, d=7, seed=0):
    image = torch.nn.functional.normalize(randn(n, d, seed=seed, device=DEVICE), dim=1)
    text = torch.nn.functional.normalize(randn(n, d, seed=seed + 1, device=DEVICE), dim=1)
    return image, text


def _run(module, image, text, *scalars, **kwargs):
    leaves = [t.clone().requires_grad_() for t in (image, text, *scalars) if t is not None]
    args = leaves[:2] + leaves[2:] + [None] * (len(scalars) - len(leaves[2:]))
    loss = module(*args, **kwargs)
    value = loss["contrastive_loss"] if isinstance(loss, dict) else loss
    grads = torch.autograd.grad(value, leaves)
    return value, grads


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("output_dict", [False, True])
def test_clip_loss_matches_open_clip(open_clip_loss, bias, output_dict):
    image, text = _pair()
    scale = torch.tensor(14.0, dtype=torch.float64, device=DEVICE)
    b = torch.tensor(-0.7, dtype=torch.float64, device=DEVICE) if bias else None
    kwargs = dict(local_loss=False, gather_with_grad=False, cache_labels=True, rank=0, world_size=1)
    ours = sslfast.nn.ClipLoss(**kwargs)
    theirs = open_clip_loss.ClipLoss(**kwargs)
    for _ in range(2):  # cache_labels: a second call reads open_clip's cache
        v1, g1 = _run(ours, image, text, scale, b, output_dict=output_dict)
        v2, g2 = _run(theirs, image, text, scale, b, output_dict=output_dict)
        torch.testing.assert_close(v1, v2, rtol=0, atol=1e-12)
        for a, c in zip(g1, g2):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    assert isinstance(ours(image, text, scale, b, output_dict=True), dict)


@pytest.mark.parametrize("dist_impl", [None, "bidir", "shift", "gather", "reduce"])
def test_siglip_loss_matches_open_clip(open_clip_loss, dist_impl):
    image, text = _pair(seed=3)
    scale = torch.tensor(10.0, dtype=torch.float64, device=DEVICE)
    bias = torch.tensor(-10.0, dtype=torch.float64, device=DEVICE)
    ours = sslfast.nn.SigLipLoss(cache_labels=False, rank=0, world_size=1, dist_impl=dist_impl, learn_scale=False)
    theirs = open_clip_loss.SigLipLoss(cache_labels=False, rank=0, world_size=1, dist_impl=dist_impl)
    assert list(ours.parameters()) == []
    v1, g1 = _run(ours, image, text, scale, bias, output_dict=True)
    v2, g2 = _run(theirs, image, text, scale, bias, output_dict=True)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-12)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


def test_siglip_without_bias_is_open_clips_none_bias(open_clip_loss):
    image, text = _pair(seed=5)
    scale = torch.tensor(10.0, dtype=torch.float64, device=DEVICE)
    ours = sslfast.nn.SigLipLoss(learn_scale=False)(image, text, scale, None)
    theirs = open_clip_loss.SigLipLoss()._loss(image, text, scale, None)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_sslfast_arguments_still_work():
    image, text = _pair()
    clip = sslfast.nn.ClipLoss(learn_scale=True, init_scale=20.0).to(DEVICE)
    torch.testing.assert_close(clip(image, text), sslfast.clip_loss(image, text, torch.tensor(20.0, device=DEVICE)))
    siglip = sslfast.nn.SigLipLoss(init_scale=5.0, init_bias=-2.0).to(DEVICE)
    expected = sslfast.siglip_loss(image, text, torch.tensor(5.0, device=DEVICE), torch.tensor(-2.0, device=DEVICE))
    torch.testing.assert_close(siglip(image, text).float(), expected.float())


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="use_horovod"):
        sslfast.nn.ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="use_horovod"):
        sslfast.nn.SigLipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="rank"):
        sslfast.nn.ClipLoss(rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        sslfast.nn.ClipLoss(world_size=0)
    with pytest.raises(ValueError, match="dist_impl"):
        sslfast.nn.SigLipLoss(dist_impl="ring")
    with pytest.raises(TypeError, match="process_group"):
        sslfast.nn.ClipLoss(process_group="world")
    image, text = _pair()
    with pytest.raises(ValueError, match="not initialized"):  # world_size > 1 needs torch.distributed
        sslfast.nn.ClipLoss(rank=0, world_size=2)(image, text, torch.tensor(1.0, device=DEVICE))
    with pytest.raises(TypeError, match="logit_scale"):
        sslfast.nn.SigLipLoss(learn_scale=False)(image, text)


def test_siglip_default_constructor_with_a_scale_and_no_bias_is_open_clips(open_clip_loss):
    """The module's own (learnable) bias is used only when the scale is omitted too: open_clip's
    forward(image, text, scale, None) has no bias term."""
    image, text = _pair(seed=6)
    scale = torch.tensor(10.0, dtype=torch.float64, device=DEVICE)
    ours = sslfast.nn.SigLipLoss()(image, text, scale, None)
    theirs = open_clip_loss.SigLipLoss()(image, text, scale, None)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_siglip_positional_arguments_are_open_clips(open_clip_loss):
    import inspect

    theirs = list(inspect.signature(open_clip_loss.SigLipLoss.__init__).parameters)[1:]
    ours = [p.name for p in inspect.signature(sslfast.nn.SigLipLoss.__init__).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD][1:]
    assert ours == theirs
    assert sslfast.nn.SigLipLoss(False, 0, 1, "gather").dist_impl == "gather"
    assert sslfast.nn.SigLipLoss(bidir=False).dist_impl == "shift"  # older open_clip's keyword
    with pytest.raises(ValueError, match="dist_impl"):
        sslfast.nn.SigLipLoss(False, 0, 1, True)  # older open_clip's positional bidir
