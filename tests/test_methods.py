"""Every method trains a few steps on tiny data: the loss is finite and goes down, and two runs
from the same seed are bitwise identical. Plus the fused pieces the methods need (SupCon,
multi-tensor EMA, GAT attention dropout, augmentations) as the methods use them, against their
definitions; the contract of those ops (parity, gradients, opcheck, compile, determinism, bad
input): test_contract.py."""

import copy

import pytest
import torch
from torch import nn

import sslfast
from sslfast import methods as M
from sslfast.data import make_sbm
from sslfast import functional
from sslfast.methods import backbones
from sslfast.methods.dgi import permute_rows

supcon, ema_ = sslfast.supcon, sslfast.ema_


# ------------------------------------------------------------------ tiny inputs per method


def _images(n=16, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


def _tiny_cnn():
    return backbones.ConvNet(1, widths=(8, 16))


def _tiny_vit():
    return backbones.ViT(image_size=8, patch_size=2, in_channels=1, embed_dim=32, depth=1, num_heads=2)


def _graph(seed=0):
    data = make_sbm(60, 3, 4.0, 12, seed=seed)
    return data.x, data.edge_index


AUG = dict(augment=M.ImageAugment(scale=(0.5, 1.0), flip_p=0.5, noise_std=0.02))
BUILDERS = {
    "simclr": lambda: (M.SimCLR(_tiny_cnn(), **AUG), _images()[0]),
    "moco2": lambda: (M.MoCo(_tiny_cnn(), queue_size=64, momentum=0.9, hidden_dim=32, **AUG), _images()[0]),
    "moco2_shuffle_bn": lambda: (M.MoCo(_tiny_cnn(), queue_size=64, momentum=0.9, hidden_dim=32, shuffle_bn=2,
                                        **AUG), _images()[0]),
    "moco2_symmetric": lambda: (M.MoCo(_tiny_cnn(), queue_size=64, momentum=0.9, hidden_dim=32, symmetric=True,
                                       **AUG), _images()[0]),
    "moco3": lambda: (M.MoCo(_tiny_cnn(), version=3, hidden_dim=32, out_dim=16, **AUG), _images()[0]),
    "byol": lambda: (M.BYOL(_tiny_cnn(), hidden_dim=32, out_dim=16, momentum=0.9, **AUG), _images()[0]),
    "simsiam": lambda: (M.SimSiam(_tiny_cnn(), dim=32, pred_dim=8, **AUG), _images()[0]),
    "supcon": lambda: (M.SupCon(_tiny_cnn(), out_dim=16, **AUG), _images()),
    "clip": lambda: (M.CLIP(_tiny_cnn(), _tiny_cnn(), embed_dim=16), (_images()[0], _images(seed=1)[0])),
    "mae": lambda: (M.MAE(_tiny_vit(), decoder_dim=16, decoder_depth=1, decoder_heads=2), _images()[0]),
    "simmim": lambda: (M.SimMIM(_tiny_vit(), mask_patch_size=2), _images()[0]),
    "ddpm": lambda: (M.DDPM(backbones.MLPDenoiser(2, hidden=32, depth=2)),
                     torch.randn(64, 2, generator=torch.Generator().manual_seed(0))),
    "gae": lambda: (M.GAE(backbones.GCNEncoder([12, 16, 8])), _graph()),
    "vgae": lambda: (M.VGAE(M.VariationalGCNEncoder(12, 8)), _graph()),
    "dgi": lambda: (M.DGI(backbones.GCNEncoder([12, 32], activation=nn.PReLU, last_activation=True)), _graph()),
    "grace": lambda: (M.GRACE(backbones.GCNEncoder([12, 32, 16], last_activation=True), proj_dim=16), _graph()),
    "graphmae": lambda: (M.GraphMAE(backbones.GATEncoder(12, 16, 2, 2), 12, alpha=2.0), _graph()),
}
LRS = {"simsiam": 0.05, "ddpm": 3e-3}


def _call(method, batch):
    return method(*batch) if isinstance(batch, tuple) and len(batch) == 2 and batch[1].dtype == torch.int64 \
        and batch[1].dim() == 2 else method(batch)


def _loss_at(method, batch, queue=None, seed=123):
    """The loss on a copy of the method (EMA, queue, BN statistics untouched) with a fixed draw
    of augmentations / masks / noise (and MoCo's queue as it was before training), so two
    evaluations differ only by the weights."""
    probe = copy.deepcopy(method)
    if queue is not None:
        probe.queue.copy_(queue)
    probe.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(_call(probe, batch))


def _train(name, seed, steps=15):
    torch.manual_seed(seed)
    method, batch = BUILDERS[name]()
    sgd = name == "simsiam"
    params = [p for p in method.parameters() if p.requires_grad]
    if sgd:
        opt = torch.optim.SGD(params, lr=LRS[name], momentum=0.9)
    else:
        opt = torch.optim.Adam(params, lr=LRS.get(name, 1e-2))
    queue = None
    if hasattr(method, "queue"):  # real keys in the queue first (a random queue is a trivial contrast)
        method.train()
        with torch.no_grad():
            for _ in range(method.queue.shape[0] // batch.shape[0]):
                method(batch)
        queue = method.queue.clone()
    before = _loss_at(method, batch, queue)
    losses = []
    for step in range(steps):
        if hasattr(method, "schedule_momentum"):
            method.schedule_momentum(step, steps)
        method.train()
        opt.zero_grad()
        loss = _call(method, batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return method, losses, before, _loss_at(method, batch, queue)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_method_trains_and_is_reproducible(name):
    method, losses, before, after = _train(name, seed=0)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f} after {len(losses)} steps"
    _, losses2, _, after2 = _train(name, seed=0)
    assert losses2 == losses and after2 == after
    _, losses3, _, _ = _train(name, seed=1, steps=2)
    assert losses3 != losses[:2]


@pytest.mark.parametrize("name", ["simclr", "mae", "gae", "graphmae", "ddpm"])
def test_embed_shapes(name):
    torch.manual_seed(0)
    method, batch = BUILDERS[name]()
    method.eval()
    with torch.no_grad():
        if name in ("gae", "graphmae"):
            emb = method.embed(*batch)
            assert emb.shape[0] == batch[0].shape[0] and emb.dim() == 2
        else:
            x = batch[0] if isinstance(batch, tuple) else batch
            emb = method.embed(x)
            assert emb.shape[0] == x.shape[0] and emb.dim() == 2


def test_moco_queue_stays_on_device_and_rotates():
    torch.manual_seed(0)
    method, images = BUILDERS["moco2"]()
    ptr0, queue0 = int(method.queue_ptr), method.queue.clone()
    method.train()
    method(images)
    assert int(method.queue_ptr) == (ptr0 + images.shape[0]) % method.queue.shape[0]
    changed = (method.queue != queue0).any(dim=1)
    assert int(changed.sum()) == images.shape[0] and bool(changed[:images.shape[0]].all())
    assert torch.allclose(method.queue.norm(dim=1), torch.ones(method.queue.shape[0]), atol=1e-5)


def test_moco_shuffle_bn_keys_come_from_groups_of_a_permutation():
    """shuffle_bn=G: each key is the key encoder's output on its group of a random permutation of
    the batch (that group's BatchNorm statistics), put back in batch order; queries use contiguous
    groups. In eval mode, or with G = 1, one pass over the whole batch."""
    torch.manual_seed(0)
    method, images = BUILDERS["moco2_shuffle_bn"]()
    method.train()
    key_net = lambda v: method.key_projection(method.key_encoder(v))  # noqa: E731
    torch.manual_seed(7)
    keys = method._keys(images)
    torch.manual_seed(7)
    perm = torch.randperm(images.shape[0])
    expected = torch.empty_like(keys)
    with torch.no_grad():
        for group in perm.tensor_split(2):
            expected[group] = key_net(images[group])
        whole = key_net(images)
    torch.testing.assert_close(keys, expected)
    assert not torch.allclose(keys, whole)  # the groups' statistics differ from the batch's
    queries = method._grouped(lambda v: method.projection(method.encoder(v)), images)
    with torch.no_grad():
        halves = torch.cat([method.projection(method.encoder(h)) for h in images.tensor_split(2)])
    torch.testing.assert_close(queries.detach(), halves)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method._keys(images), key_net(images))


def test_moco_shuffle_bn_in_forward_runs_each_encoder_on_groups():
    """Through forward: the query encoder sees the first view in G contiguous groups, the key
    encoder the second view in G groups that together are a permutation of it (not contiguous)."""
    torch.manual_seed(0)
    method, images = BUILDERS["moco2_shuffle_bn"]()
    method.train()
    seen = {"encoder": [], "key_encoder": []}
    for name in seen:
        getattr(method, name).register_forward_hook(lambda m, args, out, name=name: seen[name].append(args[0]))
    probe = copy.deepcopy(method.augment)
    torch.manual_seed(3)
    method(images)
    torch.manual_seed(3)
    v1, v2 = probe(images), probe(images)
    b = images.shape[0]
    assert [x.shape[0] for x in seen["encoder"]] == [b // 2, b // 2]
    torch.testing.assert_close(torch.cat(seen["encoder"]), v1)
    keys_in = torch.cat(seen["key_encoder"])
    assert [x.shape[0] for x in seen["key_encoder"]] == [b // 2, b // 2] and not torch.equal(keys_in, v2)
    match = (keys_in.flatten(1)[:, None] == v2.flatten(1)[None]).all(-1)  # row i of the groups = row j of v2
    assert torch.equal(match.sum(0), torch.ones(b, dtype=torch.int64))
    assert torch.equal(match.sum(1), torch.ones(b, dtype=torch.int64))
    # fewer than 2G images: fewer groups, of 2 or more each (a BatchNorm1d needs 2)
    method.shuffle_bn = 8
    seen["encoder"].clear()
    method(images[:7])
    assert [x.shape[0] for x in seen["encoder"]] == [3, 2, 2]


def test_moco_symmetric_is_the_mean_of_both_directions_and_enqueues_both_keys():
    """symmetric=True: 0.5 * (InfoNCE(q1, k2) + InfoNCE(q2, k1)), both against the queue as it was
    before the step; then the 2B keys [k1, k2] enter the queue at the pointer."""
    torch.manual_seed(0)
    method, images = BUILDERS["moco2_symmetric"]()
    method.train()
    before = copy.deepcopy(method)
    torch.manual_seed(5)
    loss = method(images)
    before.update_momentum()  # the step's own EMA update comes first in forward
    torch.manual_seed(5)
    v1, v2 = before.augment(images), before.augment(images)
    with torch.no_grad():
        k1, k2 = (before.key_projection(before.key_encoder(v)) for v in (v1, v2))
        q1, q2 = (before.projection(before.encoder(v)) for v in (v1, v2))
    queue = before.queue
    expected = 0.5 * (sslfast.info_nce(q1, k2, before.temperature, queue, in_batch_negatives=False)
                      + sslfast.info_nce(q2, k1, before.temperature, queue, in_batch_negatives=False))
    torch.testing.assert_close(loss.detach(), expected)
    b = images.shape[0]
    torch.testing.assert_close(method.queue[:2 * b], nn.functional.normalize(torch.cat([k1, k2]), dim=1))
    torch.testing.assert_close(method.queue[2 * b:], queue[2 * b:])
    assert int(method.queue_ptr) == 2 * b


def test_byol_target_follows_online_by_ema():
    torch.manual_seed(0)
    method, _ = BUILDERS["byol"]()
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    before = [t.clone() for t in method.target_encoder.parameters()]
    method.update_momentum(0.75)
    for t, b, s in zip(method.target_encoder.parameters(), before, method.encoder.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_ddpm_samples_have_the_requested_shape():
    torch.manual_seed(0)
    method, _ = BUILDERS["ddpm"]()
    for sampler in ("ddim", "ddpm"):
        out = method.sample(10, (2,), sampler=sampler, num_inference_steps=5,
                            generator=torch.Generator().manual_seed(0))
        assert out.shape == (10, 2) and torch.isfinite(out).all()


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="temperature"):
        M.SimCLR(_tiny_cnn(), temperature=0)
    with pytest.raises(ValueError, match="feature_dim"):
        M.SimCLR(nn.Identity())
    with pytest.raises(ValueError, match="version"):
        M.MoCo(_tiny_cnn(), version=4)
    with pytest.raises(ValueError, match="queue_size"):
        M.MoCo(_tiny_cnn(), version=3, queue_size=10)
    with pytest.raises(ValueError, match="shuffle_bn"):
        M.MoCo(_tiny_cnn(), version=3, shuffle_bn=2)
    with pytest.raises(ValueError, match="shuffle_bn"):
        M.MoCo(_tiny_cnn(), shuffle_bn=0)
    with pytest.raises(TypeError, match="symmetric"):
        M.MoCo(_tiny_cnn(), symmetric=1)
    with pytest.raises(ValueError, match="mask_ratio"):
        M.MAE(_tiny_vit(), mask_ratio=1.0)
    with pytest.raises(TypeError, match="ViT"):
        M.MAE(_tiny_cnn())
    with pytest.raises(ValueError, match="mask_patch_size"):
        M.SimMIM(_tiny_vit(), mask_patch_size=3)
    with pytest.raises(ValueError, match="loss"):
        M.SimMIM(_tiny_vit(), mask_patch_size=2, loss="huber")
    with pytest.raises(ValueError, match="mask_rate"):
        M.GraphMAE(backbones.GATEncoder(12, 16, 2, 2), 12, mask_rate=1.5)
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        M.SupCon(_tiny_cnn())(torch.rand(4, 1, 8, 8))


# ------------------------------------------------------------------ the fused pieces' contracts


def test_supcon_with_instance_labels_is_nt_xent():
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    labels = torch.cat([torch.arange(7), torch.arange(7)])
    torch.testing.assert_close(supcon(torch.cat([v1, v2]), labels, 0.3),
                               sslfast.reference.contrastive.nt_xent(v1, v2, 0.3))


def test_supcon_matches_the_definition():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 0, 2])  # class 3 has a single row: no positive, contributes 0
    zn = torch.nn.functional.normalize(z, dim=1)
    total, anchors = 0.0, 0
    for i in range(9):
        others = [j for j in range(9) if j != i]
        log_den = torch.logsumexp(torch.stack([zn[i] @ zn[j] / 0.2 for j in others]), 0)
        pos = [j for j in others if y[j] == y[i]]
        if pos:
            total += -sum(zn[i] @ zn[p] / 0.2 - log_den for p in pos) / len(pos)
            anchors += 1
    # mean over all N anchors (HobbitLong/SupContrast's loss.mean() with mask_pos_pairs clamped to 1)
    assert anchors == 8
    torch.testing.assert_close(supcon(z, y, 0.2), total / 9)


def test_ema_updates_in_place_without_grad():
    g = torch.Generator().manual_seed(0)
    targets = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    sources = [nn.Parameter(torch.randn(3, 4, generator=g)), nn.Parameter(torch.randn(5, generator=g))]
    expected = [0.9 * t + 0.1 * s.detach() for t, s in zip(targets, sources)]
    ptrs = [t.data_ptr() for t in targets]
    ema_(targets, sources, 0.9)
    for t, e, p in zip(targets, expected, ptrs):
        torch.testing.assert_close(t, e)
        assert t.data_ptr() == p and t.grad_fn is None


def test_gat_dropout_contract():
    gat_aggregate = sslfast.gat_aggregate
    x, edge_index = _graph()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(60, 2, 4, generator=g, dtype=torch.float64)
    a_src, a_dst = torch.randn(60, 2, generator=g, dtype=torch.float64), torch.randn(60, 2, generator=g,
                                                                                    dtype=torch.float64)
    graph = sslfast.Graph.from_edge_index(edge_index, 60)
    torch.testing.assert_close(gat_aggregate(graph, h, a_src, a_dst, dropout=0.0),
                               sslfast.gat_aggregate(graph, h, a_src, a_dst))
    # (the same seed, the same mask; the reference's mask; bad dropout values: test_contract.py)
    # inverted dropout keeps the expectation: the mean over many masks approaches the no-dropout output
    mean = sum(gat_aggregate(graph, h, a_src, a_dst, dropout=0.5, seed=s) for s in range(400)) / 400
    full = sslfast.gat_aggregate(graph, h, a_src, a_dst)
    assert (mean - full).abs().mean() < 0.1 * full.abs().mean()
    conv = sslfast.nn.GATConv(12, 4, heads=2, dropout=0.6)
    plain = sslfast.nn.GATConv(12, 4, heads=2)
    plain.load_state_dict(conv.state_dict())
    conv.eval()  # dropout is a training-mode thing
    torch.testing.assert_close(conv(x, edge_index), plain(x, edge_index))
    conv.train()
    assert not torch.allclose(conv(x, edge_index), plain(x, edge_index))


def test_augmentations():
    images = torch.rand(6, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    crop = functional.random_resized_crop(images, 8, generator=torch.Generator().manual_seed(1))
    assert crop.shape == (6, 3, 8, 8)
    square = images[..., :10]
    same = functional.random_resized_crop(square, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                          generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same, square)  # the whole image, resized to itself
    boxes = torch.tensor([[1, 2, 7, 9]] * 6)  # a rectangular box to a rectangular output: F.interpolate's resampling
    torch.testing.assert_close(sslfast.augment_images(images, boxes, size=(5, 8)),
                               torch.nn.functional.interpolate(images[:, :, 1:8, 2:11], size=(5, 8), mode="bilinear",
                                                               align_corners=False))
    assert functional.random_resized_crop(images, (6, 9)).shape == (6, 3, 6, 9)
    assert functional.augment(images).shape == images.shape  # default size: the input's
    flipped = functional.random_flip(images, 1.0)
    torch.testing.assert_close(flipped, images.flip(-1))
    torch.testing.assert_close(functional.random_flip(images, 0.0), images)
    noisy = functional.gaussian_noise(images, 0.5, generator=torch.Generator().manual_seed(2))
    assert 0.4 < float((noisy - images).std()) < 0.6
    edge_index = torch.randint(0, 50, (2, 4000), generator=torch.Generator().manual_seed(3))
    kept = functional.drop_edges(edge_index, 0.3, generator=torch.Generator().manual_seed(4))
    assert kept.shape == (4000,) and set(kept.unique().tolist()) <= {0.0, 1.0}
    assert 0.65 < float(kept.mean()) < 0.75
    x = torch.rand(5, 400) + 0.1
    masked = functional.mask_features(x, 0.25, generator=torch.Generator().manual_seed(5))
    zero_cols = (masked == 0).all(dim=0)
    assert 0.18 < float(zero_cols.float().mean()) < 0.32
    torch.testing.assert_close(masked[:, ~zero_cols], x[:, ~zero_cols])
    with pytest.raises(ValueError, match="p must"):
        functional.mask_features(x, 1.5)
    with pytest.raises(ValueError, match="images"):
        functional.random_flip(torch.rand(3, 4))


def test_dropout_is_f_dropout_on_the_hash_mask():
    """functional.dropout: drop_mask's entries scaled by 1 / (1 - p), F.dropout's distribution
    (keep rate, scale, mean), the same mask on the gradient; identity when not training or p = 0,
    zeros (x * 0) at p = 1; a new seed draws a new mask."""
    x = torch.rand(300, 200, dtype=torch.float64) + 0.5
    out = functional.dropout(x, 0.2, seed=11)
    torch.testing.assert_close(out, sslfast.drop_mask(x, 0.2, seed=11) / 0.8)
    kept = out != 0
    assert 0.78 < float(kept.double().mean()) < 0.82
    torch.testing.assert_close(out[kept], x[kept] / 0.8)
    assert abs(float(out.mean() / x.mean()) - 1) < 0.02
    assert not torch.equal(kept, functional.dropout(x, 0.2, seed=12) != 0)
    leaf = x.clone().requires_grad_()
    functional.dropout(leaf, 0.2, seed=11).sum().backward()
    torch.testing.assert_close(leaf.grad, kept.double() / 0.8)
    assert functional.dropout(x, 0.2, training=False) is x and functional.dropout(x, 0.0) is x
    y = x.clone()
    y[0, 0] = float("nan")
    dropped = functional.dropout(y, 1.0, seed=3)
    assert torch.isnan(dropped[0, 0]) and (dropped.flatten()[1:] == 0).all()
    with pytest.raises(ValueError, match="p must"):
        functional.dropout(x, -0.1)
    sparse = (x * (x > 0.5)).to_sparse_csr()  # CSR: the stored values dropped, the structure kept
    dropped = functional.dropout(sparse, 0.3, seed=4)
    assert dropped.layout == torch.sparse_csr and torch.equal(dropped.col_indices(), sparse.col_indices())
    assert torch.equal(dropped.values(), functional.dropout(sparse.values(), 0.3, seed=4))


def test_sparse_csr_features_give_the_dense_results():
    """Bag-of-words features as a sparse CSR tensor (what ``sslfast train`` feeds the GCN methods):
    mask_features masks the same columns, DGI's corruption permutes the same rows (an empty row
    included), and each GCN method's loss and gradients match the dense run under the same seed."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 12, generator=g) < 0.3).float() * torch.rand(60, 12, generator=g)
    x[5] = 0.0
    sparse = x.to_sparse_csr()
    perm = torch.randperm(60, generator=g)
    assert torch.equal(permute_rows(sparse, perm).to_dense(), x[perm])
    dense_masked = functional.mask_features(x, 0.4, generator=torch.Generator().manual_seed(1))
    sparse_masked = functional.mask_features(sparse, 0.4, generator=torch.Generator().manual_seed(1))
    assert sparse_masked.layout == torch.sparse_csr and torch.equal(sparse_masked.to_dense(), dense_masked)
    _, edge_index = _graph()
    for name in ("gae", "vgae", "dgi", "grace"):
        losses, grads = [], []
        for features in (x, sparse):
            torch.manual_seed(0)
            method, _ = BUILDERS[name]()
            torch.manual_seed(1)
            loss = method(features, edge_index)
            loss.backward()
            losses.append(loss.detach())
            grads.append([p.grad for p in method.parameters() if p.grad is not None])
        torch.testing.assert_close(losses[1], losses[0], msg=name)
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, msg=name)


class _Opaque(nn.Module):
    """The same encoder behind a type the method does not know: no edge_weight for GRACE, the dense
    masked input for GraphMAE."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.out_dim = inner, inner.out_dim

    def forward(self, x, edge_index):
        return self.inner(x, edge_index)


def test_grace_edge_weights_equal_rebuilt_graph():
    """GRACE drops edges as 0/1 weights on the one cached graph; an encoder that takes no
    edge_weight gets the kept edges instead. Same draws, same weights: the same loss."""

    torch.manual_seed(0)
    encoder = backbones.GCNEncoder([12, 32, 16], last_activation=True)
    weighted = M.GRACE(encoder, proj_dim=16)
    rebuilt = M.GRACE(_Opaque(copy.deepcopy(encoder)), proj_dim=16)
    rebuilt.fc1.load_state_dict(weighted.fc1.state_dict())
    rebuilt.fc2.load_state_dict(weighted.fc2.state_dict())
    assert weighted._weighted and not rebuilt._weighted
    x, edge_index = _graph()
    torch.manual_seed(5)
    a = weighted(x, edge_index)
    torch.manual_seed(5)
    b = rebuilt(x, edge_index)
    torch.testing.assert_close(a, b)


def test_graphmae_projected_first_layer_equals_the_dense_masked_input():
    """With the GAT encoder GraphMAE projects kept, noise and mask-token rows separately (and with
    CSR features reconstructs through ``sce_loss_of_codes``); without dropout that is the dense
    path's loss and gradients, for dense and CSR features (an empty feature row included)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 12, generator=g) < 0.3).float() * torch.rand(60, 12, generator=g)
    x[7] = 0.0
    _, edge_index = _graph()
    torch.manual_seed(0)
    fast = M.GraphMAE(backbones.GATEncoder(12, 16, 2, 2, in_drop=0.0, attn_drop=0.0), 12, replace_rate=0.1,
                      feat_drop=0.0, attn_drop=0.0)
    with torch.no_grad():
        fast.mask_token.normal_()
        fast.decoder.bias.normal_()
    dense = copy.deepcopy(fast)
    dense.encoder = _Opaque(dense.encoder)
    for features in (x, x.to_sparse_csr()):
        fast.zero_grad()
        dense.zero_grad()
        torch.manual_seed(3)
        a = fast(features, edge_index)
        a.backward()
        torch.manual_seed(3)
        b = dense(x, edge_index)
        b.backward()
        torch.testing.assert_close(a, b)
        grads = dict(dense.named_parameters())
        for name, p in fast.named_parameters():
            torch.testing.assert_close(p.grad, grads[name.replace("encoder.", "encoder.inner.", 1)].grad, msg=name)


@pytest.mark.parametrize("sparse", [False, True])
def test_graphmae_project_masked_draws_each_row_as_the_dense_input(sparse):
    """An identity first layer shows dropout(x_masked) itself: kept rows are x, noise rows their
    sources' features, token rows the mask token, each entry kept with probability 1 - p and
    scaled by 1 / (1 - p), noise rows with masks of their own (not their sources')."""
    p, n, f = 0.25, 64, 3000
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, f, generator=g) + 0.5  # no zero entry: a zero in h is a dropped entry
    method = M.GraphMAE(backbones.GATEncoder(f, 16, 2, 2), f, replace_rate=0.25)
    with torch.no_grad():
        method.mask_token.uniform_(0.5, 1.5)
    torch.manual_seed(1)
    draw = method.draw(n, x.device)
    assert sorted(torch.cat([draw.kept, draw.noise, draw.token]).tolist()) == list(range(n))
    torch.manual_seed(2)
    h = method.project_masked(x, x.to_sparse_csr() if sparse else None, draw, torch.eye(f), p).detach()
    expect = x.clone()
    expect[draw.noise] = x[draw.sources]
    expect[draw.token] = method.mask_token.detach()
    kept = h != 0
    torch.testing.assert_close(h[kept], expect[kept] / (1 - p))
    for rows in (draw.kept, draw.noise, draw.token):
        assert abs(kept[rows].float().mean().item() - (1 - p)) < 0.02
    other = draw.noise != draw.sources  # a node can draw itself as its source
    same = (kept[draw.noise[other]] == kept[draw.sources[other]]).float().mean().item()
    assert abs(same - (p * p + (1 - p) ** 2)) < 0.02  # independent masks; 1.0 if shared


def test_graphmae_gat_layers_start_from_graphmae_initialization():
    """DGL's GATConv.reset_parameters, which GraphMAE keeps: Xavier-normal with the ReLU gain on
    the projection and on both attention vectors (shape [1, heads, C]: fans heads * C and C), zero
    bias; PyG's Glorot-uniform (gain 1) would give weights sqrt(2) times smaller."""
    torch.manual_seed(0)
    f, hidden, heads = 3000, 512, 4
    method = M.GraphMAE(backbones.GATEncoder(f, hidden, heads, 2), f)
    gain = 2 ** 0.5
    c = hidden // heads
    for i, conv in enumerate(method.encoder.convs):
        fan_in = f if i == 0 else hidden
        expect = gain * (2 / (fan_in + hidden)) ** 0.5
        assert abs(conv.lin.weight.std().item() / expect - 1) < 0.02, i
        assert abs(conv.lin.weight.mean().item()) < 0.05 * expect
        for att in (conv.att_src, conv.att_dst):
            assert abs(att.std().item() / (gain * (2 / (heads * c + c)) ** 0.5) - 1) < 0.15, i
        assert not conv.bias.any()
    dec = method.decoder
    assert abs(dec.weight.std().item() / (gain * (2 / (hidden + f)) ** 0.5) - 1) < 0.02
    for att in (dec.att_src, dec.att_dst):
        assert abs(att.std().item() / (gain * (2 / (2 * f)) ** 0.5) - 1) < 0.1
    with pytest.raises(ValueError, match="att_dst must be shaped"):  # [out] would have other fans
        M.graphmae.graphmae_gat_init_(dec.weight, dec.att_src.view(1, 1, -1), dec.att_dst, dec.bias)


def test_sce_loss_of_codes_is_sce_of_the_reconstruction():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(9, 6, generator=g, dtype=torch.float64)
    codes[2] = 0.0
    weight = torch.randn(20, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(20, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(9, 20, generator=g, dtype=torch.float64) < 0.3) * torch.rand(9, 20, generator=g,
                                                                                 dtype=torch.float64)
    codes.requires_grad_()
    direct = M.graphmae.sce_loss(codes @ weight.t() + bias, y, 3.0)
    grads = torch.autograd.grad(direct, (codes, weight, bias))
    proj = y @ torch.cat([weight, bias.unsqueeze(1)], dim=1)
    fused = M.graphmae.sce_loss_of_codes(codes, weight, bias, proj, y.norm(dim=1), 3.0)
    torch.testing.assert_close(fused, direct)
    for a, b in zip(torch.autograd.grad(fused, (codes, weight, bias)), grads):
        torch.testing.assert_close(a, b)
