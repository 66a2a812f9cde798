"""One rank of tests/test_distributed.py: ``python tests/distributed_worker.py RANK WORLD INIT_FILE OUT_DIR``.

Runs every case of the distributed contrastive losses against the single-process op on the
concatenated batch, in this process, and writes OUT_DIR/rank<RANK>.json: per case the max abs
error of the loss and of each gradient (or the error text of a failure). Each world size is
spawned once and runs all cases, to keep the test short. Gradients are compared as DDP would
see them: the row gradients of a rank divided by the world size (DDP averages), the gradients
of shared tensors (logit_scale, logit_bias) summed over ranks and divided by the world size.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import sys
import traceback

import torch
import torch.distributed as dist

import sslfast
from sslfast import distributed as sd

# Uneven local batches, and blocks far smaller than the batch so every op streams several.
SIZES = {1: [5], 2: [3, 6], 4: [2, 5, 1, 4]}
sd.BLOCK = 4


def _split(t, sizes, rank):
    start = sum(sizes[:rank])
    return t[start:start + sizes[rank]]


def run_case(rank, world, group, make, fn, dtype=torch.float64, forward_context=contextlib.nullcontext):
    """make(n_global, generator) -> (rows: list of global [N, ...] tensors, shared: list);
    fn(*rows, *shared, process_group) -> loss, called (both runs) under ``forward_context()``;
    backward runs outside it, as in a training loop. Returns {name: max abs error}."""
    sizes = SIZES[world]
    g = torch.Generator().manual_seed(1234)
    rows, shared = make(sum(sizes), g)
    rows = [r.to(dtype) if r.is_floating_point() else r for r in rows]
    shared = [s.to(dtype) if s is not None and s.is_floating_point() else s for s in shared]

    def leaf(t):
        return t.clone().requires_grad_(True) if t is not None and t.is_floating_point() else t

    ref_rows, ref_shared = [leaf(r) for r in rows], [leaf(s) for s in shared]
    with forward_context():
        ref = fn(*ref_rows, *ref_shared, None)
    ref.backward()
    local_rows = [leaf(_split(r, sizes, rank)) for r in rows]
    local_shared = [leaf(s) for s in shared]
    with forward_context():
        loss = fn(*local_rows, *local_shared, group)
    loss.backward()
    errors = {}
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss, group=group)
    errors["loss"] = float((mean_loss / world - ref.detach()).abs())
    for i, (mine, theirs) in enumerate(zip(local_rows, ref_rows)):
        if mine.is_floating_point():
            expected = _split(theirs.grad, sizes, rank)
            errors[f"grad_rows{i}"] = float((mine.grad / world - expected).abs().max())
    for i, (mine, theirs) in enumerate(zip(local_shared, ref_shared)):
        if mine is not None and mine.is_floating_point() and mine.requires_grad and theirs.grad is not None:
            total = mine.grad.clone()
            dist.all_reduce(total, group=group)
            errors[f"grad_shared{i}"] = float((total / world - theirs.grad).abs().max())
    return errors


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def cases():
    d = 6
    out = {}
    for normalize in (True, False):
        for exclude in (False, True):
            out[f"nt_xent normalize={normalize} exclude_positive={exclude}"] = (
                lambda n, g: ([_rand(g, n, d) * 0.5, _rand(g, n, d) * 0.5], []),
                lambda z1, z2, pg, nm=normalize, ex=exclude: sslfast.nt_xent(
                    z1, z2, 0.5, normalize=nm, exclude_positive=ex, process_group=pg))
    for in_batch in (True, False):
        for with_queue in (False, True):
            if not in_batch and not with_queue:
                continue
            out[f"info_nce in_batch_negatives={in_batch} queue={with_queue}"] = (
                lambda n, g, wq=with_queue: ([_rand(g, n, d), _rand(g, n, d)], [_rand(g, 11, d) if wq else None]),
                lambda q, k, queue, pg, ib=in_batch: sslfast.info_nce(
                    q, k, 0.2, queue, in_batch_negatives=ib, process_group=pg))
    for bias in (False, True):
        out[f"clip_loss bias={bias}"] = (
            lambda n, g, b=bias: ([_rand(g, n, d) * 0.4, _rand(g, n, d) * 0.4],
                                  [torch.tensor(2.5, dtype=torch.float64), torch.tensor(-0.3) if b else None]),
            lambda i, t, s, b, pg: sslfast.clip_loss(i, t, s, b, process_group=pg))
    for ring in (False, True):
        out[f"siglip_loss ring={ring}"] = (
            lambda n, g: ([_rand(g, n, d) * 0.4, _rand(g, n, d) * 0.4],
                          [torch.tensor(3.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)]),
            lambda i, t, s, b, pg, r=ring: (sslfast.siglip_loss(i, t, s, b, process_group=pg, ring=r) if pg is not None
                                           else sslfast.siglip_loss(i, t, s, b)))
    for pairwise in (False, True):
        for normalize in (True, False):
            out[f"supcon pairwise={pairwise} normalize={normalize}"] = (
                lambda n, g: ([_rand(g, n, d) * 0.5, torch.randint(0, 3, (n,), generator=g)], []),
                lambda f, y, pg, pw=pairwise, nm=normalize: sslfast.supcon(f, y, 0.3, normalize=nm, pairwise=pw,
                                                                           process_group=pg))
    out["all_gather_with_grad"] = (lambda n, g: ([_rand(g, n, d)], []), _gathered_weighted_sum)
    return out


def _gathered_weighted_sum(x, pg):
    """Every rank's loss reads all rows: the gradient each rank gets is the sum over ranks."""
    rows = sd.all_gather_with_grad(x, pg) if pg is not None else x
    weights = torch.randn(rows.shape, generator=torch.Generator().manual_seed(3), dtype=rows.dtype)
    return (rows * weights).sum()


def low_precision_cases():
    """float32 and bfloat16 inputs: compared with the op in the same dtype (fp32 accumulation)."""
    d = 8
    return {
        "nt_xent float32": (torch.float32, lambda n, g: ([_rand(g, n, d), _rand(g, n, d)], []),
                            lambda z1, z2, pg: sslfast.nt_xent(z1, z2, 0.5, process_group=pg)),
        "clip_loss bfloat16": (torch.bfloat16, lambda n, g: ([_rand(g, n, d) * 0.3, _rand(g, n, d) * 0.3],
                                                             [torch.tensor(2.0), None]),
                               lambda i, t, s, b, pg: sslfast.clip_loss(i, t, s.float(), None, process_group=pg)),
    }


def autocast_cases():
    """float32 inputs under CPU autocast (bfloat16): the single-process op computes in float32
    there, so the distributed op must too, in forward and in backward (a bf16 forward with an
    fp32 backward gave gradients off by 16-28%). Large logits make bf16 rounding visible."""
    d = 8

    def unit(g, n):
        return torch.nn.functional.normalize(_rand(g, n, d), dim=1)

    def pair(scale, bias):
        return lambda n, g: ([unit(g, n), unit(g, n)],
                             [torch.tensor(scale), None if bias is None else torch.tensor(bias)])

    return {
        "clip_loss": (pair(100.0, None), lambda i, t, s, b, pg: sslfast.clip_loss(i, t, s, process_group=pg)),
        "siglip_loss gather": (pair(30.0, -10.0), lambda i, t, s, b, pg: sslfast.siglip_loss(
            i, t, s, b, **({} if pg is None else {"process_group": pg}))),
        "siglip_loss ring": (pair(30.0, -10.0), lambda i, t, s, b, pg: sslfast.siglip_loss(
            i, t, s, b, **({} if pg is None else {"process_group": pg, "ring": True}))),
        "nt_xent": (lambda n, g: ([_rand(g, n, d), _rand(g, n, d)], []),
                    lambda z1, z2, pg: sslfast.nt_xent(z1, z2, 0.05, process_group=pg)),
    }


def expect_error(rank, world, group, label, call):
    """Every rank must raise (not hang, not pass): ValueError / TypeError, or the rank's own
    error where its input fails otherwise."""
    try:
        call()
    except Exception as error:
        result = f"{type(error).__name__}: {error}"
        ok = True
    else:
        result, ok = "no error", False
    dist.barrier(group=group)  # the group is still in step after the error
    return {"ok": ok, "message": result}


def bad_input_cases(rank, world, group):
    d = 6
    out = {}
    scale = torch.tensor(2.0)
    out["D differs across ranks"] = lambda: sslfast.clip_loss(
        torch.randn(3, d + (rank == 1)), torch.randn(3, d + (rank == 1)), scale, process_group=group)
    out["dtype differs across ranks"] = lambda: sslfast.nt_xent(
        *(torch.randn(3, d, dtype=torch.float64 if rank == world - 1 else torch.float32) for _ in range(2)),
        process_group=group)
    out["bad input on one rank"] = lambda: sslfast.nt_xent(
        torch.randn(3, d), torch.randn(3 + (rank == world - 1), d), process_group=group)
    out["world_size mismatch"] = lambda: sd.clip_loss(
        torch.randn(3, d), torch.randn(3, d), scale, process_group=group,
        expect=(rank, world + 1) if rank == 0 else None)
    out["temperature differs"] = lambda: sslfast.supcon(
        torch.randn(3, d), torch.arange(3), 0.1 * (rank + 1), process_group=group)
    out["queue rows differ"] = lambda: sslfast.info_nce(
        torch.randn(3, d), torch.randn(3, d), 0.1, torch.randn(4 + rank, d), process_group=group)
    out["other error on one rank"] = lambda: sslfast.nt_xent(  # bool() of a 2-element tensor: RuntimeError
        torch.randn(3, d), torch.randn(3, d), normalize=torch.ones(2) if rank == 0 else True, process_group=group)
    out["not a process group"] = lambda: sslfast.siglip_loss(
        torch.randn(3, d), torch.randn(3, d), scale, scale, process_group="world")
    return {k: expect_error(rank, world, group, k, v) for k, v in out.items()}


def open_clip_parity(rank, world, group):
    """open_clip ClipLoss(local_loss=True, gather_with_grad=True) and SigLipLoss (its exchanges) on
    even local batches: the same loss per rank and the same gradients as sslfast (loaded from its
    loss.py: importing open_clip pulls torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        return {"skipped": "open_clip not installed"}
    path = os.path.join(spec.submodule_search_locations[0], "loss.py")
    module_spec = importlib.util.spec_from_file_location("_open_clip_loss_for_test", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    g = torch.Generator().manual_seed(7)
    n, d = 4, 6
    image = torch.nn.functional.normalize(torch.randn(n * world, d, generator=g, dtype=torch.float64), dim=1)
    text = torch.nn.functional.normalize(torch.randn(n * world, d, generator=g, dtype=torch.float64), dim=1)
    mine = [t[rank * n:(rank + 1) * n].clone().requires_grad_() for t in (image, text)]
    theirs = [t[rank * n:(rank + 1) * n].clone().requires_grad_() for t in (image, text)]
    s1, s2 = (torch.tensor(5.0, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ours = sslfast.nn.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)(*mine, s1)
    ref = module.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)(*theirs, s2)
    ours.backward()
    ref.backward()
    out = {"loss": float((ours - ref).abs()), "grad_image": float((mine[0].grad - theirs[0].grad).abs().max()),
           "grad_text": float((mine[1].grad - theirs[1].grad).abs().max()),
           "grad_scale": float((s1.grad - s2.grad).abs())}
    # SigLIP: open_clip's neighbour exchanges ("bidir", "shift") against sslfast's ring and gather
    for impl in ("bidir", "shift", "gather"):
        mine = [t[rank * n:(rank + 1) * n].clone().requires_grad_() for t in (image, text)]
        theirs = [t[rank * n:(rank + 1) * n].clone().requires_grad_() for t in (image, text)]
        scalars = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (5.0, -3.0, 5.0, -3.0)]
        ours = sslfast.nn.SigLipLoss(rank=rank, world_size=world, dist_impl=impl, learn_scale=False)(
            *mine, *scalars[:2])
        ref = module.SigLipLoss(rank=rank, world_size=world, dist_impl=impl)(*theirs, *scalars[2:])
        ours.backward()
        ref.backward()
        out[f"siglip {impl} loss"] = float((ours - ref).abs())
        out[f"siglip {impl} grads"] = max(float((a.grad - b.grad).abs().max())
                                          for a, b in zip(mine + scalars[:2], theirs + scalars[2:]))
    return out


class _TinyEncoder(torch.nn.Sequential):
    out_dim = 8

    def __init__(self):
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(16, 8))


def method_cases(rank, world, group):
    """SimCLR, CLIP and MoCo v2 given the process group (augmentation off, so both runs see the
    same views): the mean loss over ranks and the DDP-averaged parameter gradients equal one
    process on the global batch; MoCo's queue, fed every rank's keys, equals the single-process
    queue after the same step."""
    from sslfast import methods

    sizes = SIZES[world]
    g = torch.Generator().manual_seed(99)
    images = torch.rand(sum(sizes), 1, 4, 4, generator=g, dtype=torch.float64)
    top, bottom = images[:, :, :2].contiguous(), images[:, :, 2:].contiguous()

    class _HalfEncoder(torch.nn.Sequential):
        out_dim = 8

        def __init__(self):
            super().__init__(torch.nn.Flatten(), torch.nn.Linear(8, 8))

    builders = {
        "SimCLR": (lambda pg: methods.SimCLR(_TinyEncoder(), hidden_dim=8, out_dim=4, augment=torch.nn.Identity(),
                                             process_group=pg), lambda rows: images[rows]),
        "CLIP": (lambda pg: methods.CLIP(_HalfEncoder(), _HalfEncoder(), embed_dim=4, process_group=pg),
                 lambda rows: (top[rows], bottom[rows])),
        "MoCo v2": (lambda pg: methods.MoCo(_TinyEncoder(), hidden_dim=8, out_dim=4, queue_size=7,
                                            augment=torch.nn.Identity(), process_group=pg),
                    lambda rows: images[rows]),
    }
    out = {}
    for name, (build, batch) in builders.items():
        torch.manual_seed(5)
        ref = build(None).double()
        torch.manual_seed(5)
        mine = build(group).double()
        everything = torch.arange(sum(sizes))
        ref_loss = ref(batch(everything))
        ref_loss.backward()
        start = sum(sizes[:rank])
        loss = mine(batch(everything[start:start + sizes[rank]]))
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total, group=group)
        errors = {"loss": float((total / world - ref_loss.detach()).abs())}
        grad_error = 0.0
        for p_ref, p_mine in zip(ref.parameters(), mine.parameters()):
            if p_ref.grad is None:
                continue
            averaged = p_mine.grad.clone()
            dist.all_reduce(averaged, group=group)
            grad_error = max(grad_error, float((averaged / world - p_ref.grad).abs().max()))
        errors["grad_params"] = grad_error
        if name == "MoCo v2":
            errors["queue"] = float((mine.queue - ref.queue).abs().max())
            errors["queue_ptr"] = float(mine.queue_ptr != ref.queue_ptr)
        out[name] = errors
    return out


def main():
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    group = dist.group.WORLD
    results = {"exact": {}, "low_precision": {}, "autocast": {}, "methods": {}, "bad_input": {}, "open_clip": {}}
    for name, (make, fn) in cases().items():
        try:
            results["exact"][name] = run_case(rank, world, group, make, fn)
        except Exception:
            results["exact"][name] = {"error": traceback.format_exc()}
            break  # the group may be out of step: stop rather than hang
    for name, (dtype, make, fn) in low_precision_cases().items():
        try:
            results["low_precision"][name] = run_case(rank, world, group, make, fn, dtype)
        except Exception:
            results["low_precision"][name] = {"error": traceback.format_exc()}
            break
    for name, (make, fn) in autocast_cases().items():
        try:
            results["autocast"][name] = run_case(rank, world, group, make, fn, torch.float32,
                                                 lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        except Exception:
            results["autocast"][name] = {"error": traceback.format_exc()}
            break
    try:
        results["methods"] = method_cases(rank, world, group)
    except Exception:
        results["methods"] = {"error": {"error": traceback.format_exc()}}
    try:
        results["bad_input"] = bad_input_cases(rank, world, group)
    except Exception:
        results["bad_input"] = {"error": traceback.format_exc()}
    try:
        results["open_clip"] = open_clip_parity(rank, world, group)
    except Exception:
        results["open_clip"] = {"error": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f, indent=1)
    dist.barrier()
    # Leave without running C++ static destructors: once in a while gloo aborted there ("terminate
    # called without an active exception") after every result was written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
