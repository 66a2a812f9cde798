"""No host sync in any hot path on CUDA: a 50-step DDIM loop, a diffusion training step, the MAE
masking + loss step, contrastive losses and GNN aggregation, forward and backward, run under
``torch.cuda.set_sync_debug_mode("error")`` (which raises on ``.item()``, ``nonzero``, device to
host copies ...). Each body runs once before the check: first calls may autotune or build caches
(schedule coefficient tables, GCN degrees), which is allowed to sync. CUDA only: a CPU tensor
has nothing to sync with."""

import contextlib
import functools

import pytest
import torch

import sslfast
from sslfast import diffusion as D
from sslfast.graph import Graph

import helpers
from helpers import DEVICE

pytestmark = pytest.mark.skipif(DEVICE != "cuda", reason="host syncs only exist on CUDA (SSLFAST_TEST_DEVICE=cuda)")



@contextlib.contextmanager
def no_host_sync():
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()


randn = functools.partial(helpers.randn, dtype=torch.float32)


def check_sync_free(body):
    """Runs ``body`` with the backend ``auto`` picks on CUDA (what users run)."""
    body()  # warm-up: autotuning, caches
    with no_host_sync():
        body()


def test_ddim_sampling_loop_has_no_host_sync():
    schedule = D.NoiseSchedule(1000, "scaled_linear", 0.00085, 0.012, device=DEVICE)
    schedule.set_timesteps(50, "leading")
    x0 = randn(2, 4, 16, 16, seed=1)

    def loop():
        x = x0
        with torch.no_grad():
            for t in schedule.timesteps:  # 0-dim device tensors: no .item()
                model_output = 0.1 * x
                x, _ = D.ddim_step(model_output, t, x, schedule, clip_sample=True)
        return x

    check_sync_free(loop)


@pytest.mark.parametrize("sampler", ["ddpm", "euler", "dpmpp_2m"])
def test_sampler_loops_have_no_host_sync(sampler):
    from sslfast.nn import DiffusionSampler

    schedule = D.NoiseSchedule(1000, device=DEVICE)
    loop = DiffusionSampler(schedule, sampler, 10, guidance_scale=3.0)
    noise = randn(2, 4, 8, 8, seed=14)
    check_sync_free(lambda: loop(lambda x, t: (0.1 * x, 0.2 * x), noise))


def test_diffusion_training_and_other_steps_have_no_host_sync():
    schedule = D.NoiseSchedule(1000, device=DEVICE)
    schedule.set_timesteps(20)
    x0 = randn(3, 3, 8, 8, seed=2)
    pred = randn(3, 3, 8, 8, seed=3, requires_grad=True)
    t = torch.tensor([5, 500, 999], device=DEVICE)
    sigmas = schedule.sigmas_for(schedule.timesteps)

    def step():
        x_t, target = D.q_sample(x0, t, schedule)
        D.diffusion_loss(pred, target, t, schedule, snr_gamma=5.0).backward()
        with torch.no_grad():
            D.ddpm_step(pred.detach(), t, x_t, schedule)
            D.euler_step(pred.detach(), x_t, sigmas[3], sigmas[4])
            _, x0_pred = D.dpmpp_2m_step(pred.detach(), x_t, sigmas[3], sigmas[4])
            D.dpmpp_2m_step(pred.detach(), x_t, sigmas[4], sigmas[5], x0_pred, sigmas[3])

    check_sync_free(step)


def test_mae_masking_step_has_no_host_sync():
    n, length, d, patch = 2, 16, 8, 4
    x = randn(n, 1 + length, d, seed=4, requires_grad=True)
    token = randn(1, 1, d, seed=5, requires_grad=True)
    imgs = randn(n, 3, 16, 16, seed=6)
    pred = randn(n, length, patch * patch * 3, seed=7, requires_grad=True)

    def step():
        vis, mask, ids = sslfast.random_masking(x, 0.75, num_prefix_tokens=1)
        full = sslfast.unshuffle(vis, ids, token, num_prefix_tokens=1)
        loss = sslfast.masked_patch_loss(pred, imgs, mask, patch) + full.square().mean()
        loss.backward()

    check_sync_free(step)


def test_contrastive_losses_have_no_host_sync():
    z1, z2 = randn(33, 16, seed=8, requires_grad=True), randn(33, 16, seed=9, requires_grad=True)
    queue = randn(70, 16, seed=10)
    scale = torch.tensor(10.0, device=DEVICE, requires_grad=True)
    bias = torch.tensor(-5.0, device=DEVICE, requires_grad=True)
    labels = torch.randint(0, 5, (66,), generator=torch.Generator().manual_seed(16)).to(DEVICE)

    def step():
        loss = (sslfast.nt_xent(z1, z2) + sslfast.info_nce(z1, z2, queue=queue)
                + sslfast.clip_loss(z1, z2, scale) + sslfast.siglip_loss(z1, z2, scale, bias))
        for pairwise in (False, True):
            loss = loss + sslfast.supcon(torch.cat([z1, z2]), labels, pairwise=pairwise)
        loss.backward()

    check_sync_free(step)


def test_gnn_aggregation_has_no_host_sync():
    g = torch.Generator().manual_seed(11)
    edge_index = torch.randint(0, 50, (2, 300), generator=g)
    edge_index[1, :7] = edge_index[0, :7]  # a few self loops
    edge_index = edge_index.to(DEVICE)
    graph = Graph.from_edge_index(edge_index, 50)
    x = randn(50, 12, seed=12, requires_grad=True)
    w = randn(300, seed=13, requires_grad=True)

    conv = sslfast.nn.GCNConv(12, 12).to(DEVICE)  # the graph has self loops: PyG's remaining-loops path

    def step():
        out = sslfast.spmm(graph, x, "sum", w) + sslfast.spmm(graph, x, "max") + sslfast.gcn_aggregate(graph, x)
        out = out + conv(x, graph, w) + conv(x, graph)
        out.square().sum().backward()

    check_sync_free(step)


def test_ddim_step_captures_in_a_cuda_graph():
    """The step reads its timestep from device memory: one captured graph replays any step."""
    schedule = D.NoiseSchedule(1000, device=DEVICE)
    schedule.set_timesteps(10)
    x = randn(2, 4, 8, 8, seed=15)
    t = schedule.timesteps[0].clone()
    with torch.no_grad():
        D.ddim_step(0.1 * x, t, x, schedule)  # warm-up: compile, autotune, coefficient cache
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, _ = D.ddim_step(0.1 * x, t, x, schedule)
        for step in schedule.timesteps[1:4]:
            t.copy_(step)
            graph.replay()
            want, _ = D.ddim_step(0.1 * x, step, x, schedule)
            torch.testing.assert_close(out, want)
