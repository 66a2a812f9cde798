"""Distributed contrastive losses: per-rank peak memory and step time against the world size at a
fixed global batch (``python -m sslfast.bench distributed``).

Not a harness family (a case here is several processes): this module launches W processes per
world size on one machine (gloo on CPU, NCCL with ``--device cuda``, one GPU per rank), each
running ``op(local rows, ..., process_group=WORLD)`` forward + backward (sslfast.distributed:
local rows against the global batch, streamed over tiles). Per rank it records the peak
memory of one step (``harness.measure_peak_mib``: CPU, the profiler's allocator events; CUDA,
max_memory_allocated) and the median step time. At world size 1 it also records the fused
single-process op and the eager reference (which builds the N x N logits), for contrast.

    python -m sslfast.bench distributed --op clip_loss --global-batch 2048,8192 --world-sizes 1,2,4

Memory per rank should follow O((N_local + N_global) * D) + a few BLOCK x BLOCK tiles, not N^2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

OPS = ("clip_loss", "siglip_loss", "nt_xent", "info_nce", "supcon")


def _inputs(op, n_local, dim, device, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n_local, dim, generator=g), dim=1).to(device).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(n_local, dim, generator=g), dim=1).to(device).requires_grad_()
    scale = torch.tensor(10.0, device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)
    labels = torch.randint(0, 100, (n_local,), generator=g).to(device)
    return a, b, scale, bias, labels


def _call(op, group, a, b, scale, bias, labels, *, ring=False, impl="sslfast"):
    import sslfast
    from sslfast.reference import contrastive as reference

    fn = getattr(reference, op) if impl == "eager" else getattr(sslfast, op)
    kw = {} if group is None else {"process_group": group}
    if op == "clip_loss":
        return fn(a, b, scale, **kw)
    if op == "siglip_loss":
        return fn(a, b, scale, bias, **(dict(kw, ring=ring) if group is not None else {}))
    if op == "nt_xent":
        return fn(a, b, 0.5, **kw)
    if op == "info_nce":
        return fn(a, b, 0.2, **kw)
    return fn(a, labels, 0.1, **kw)


def _measure(step, steps, device, barrier=None):
    from .harness import measure_peak_mib

    step()  # warm-up
    peak = measure_peak_mib(step, device)
    times = []
    for _ in range(steps):
        if barrier is not None:
            barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return peak, statistics.median(times)


def worker(rank, world, init, out, args):
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"file://{init}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=600))
    group = dist.group.WORLD
    sizes = [len(c) for c in torch.arange(args.n).tensor_split(world)]
    a, b, scale, bias, labels = _inputs(args.op, sizes[rank], args.dim, device, seed=rank)

    def run(group_, impl="sslfast"):
        def step():
            for t in (a, b, scale, bias):
                t.grad = None
            _call(args.op, group_, a, b, scale, bias, labels, ring=args.ring, impl=impl).backward()
        return step

    record = {"rank": rank, "world": world, "n_global": args.n, "n_local": sizes[rank], "dim": args.dim,
              "op": args.op, "ring": args.ring}
    record["peak_mib"], record["step_s"] = _measure(run(group), args.steps, device,
                                                    barrier=lambda: dist.barrier(group=group))
    if world == 1:  # contrast: the fused single-process op and the eager N x N reference
        for impl, group_ in (("fused", None), ("eager", None)):
            if impl == "eager" and args.n > args.max_eager:
                continue
            peak, t = _measure(run(group_, "eager" if impl == "eager" else "sslfast"), args.steps, device)
            record[f"{impl}_peak_mib"], record[f"{impl}_step_s"] = peak, t
    record["load_average"] = os.getloadavg()[0]  # other processes on the machine stretch the step times
    with open(os.path.join(out, f"{args.n}-{world}-{rank}.json"), "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


def _launch(world, n, args, tmp):
    init = os.path.join(tmp, f"init-{n}-{world}")
    cmd = [sys.executable, "-m", "sslfast.bench.distributed", "--worker", "", "--op", args.op, "--dim", str(args.dim),
           "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
           "--max-eager", str(args.max_eager), "--global-batch", str(n)] + (["--ring"] if args.ring else [])
    procs = []
    for rank in range(world):
        c = list(cmd)
        c[c.index("--worker") + 1] = f"{rank},{world},{init},{tmp}"
        procs.append(subprocess.Popen(c))
    deadline = time.monotonic() + args.timeout  # one budget for the group, not per rank
    try:
        codes = [p.wait(timeout=max(0.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        # a rank stuck in a collective holds the others there: end every worker, not just the first
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        raise RuntimeError(f"world {world}, N {n}: the ranks did not finish within --timeout "
                           f"{args.timeout} s") from None
    if any(codes):
        raise RuntimeError(f"world {world}, N {n}: a rank exited with {codes}")
    return [json.load(open(os.path.join(tmp, f"{n}-{world}-{r}.json"))) for r in range(world)]


def _table(rows, args):
    lines = [f"op {args.op}{' ring' if args.ring else ''}, D = {args.dim}, {args.device}, {args.threads} thread(s)"
             " per rank", "", "| N global | world | N local | peak MiB / rank (max) | step s (median, max over ranks) "
             "| N x N fp32 MiB | fused 1-proc MiB | eager 1-proc MiB | load avg |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['n_global']} | {r['world']} | {r['n_local']} | {r['peak_mib']:.1f} | {r['step_s']:.3f} | "
                     f"{r['n_global'] ** 2 * 4 / 2 ** 20:.1f} | {r.get('fused_peak_mib', float('nan')):.1f} | "
                     f"{r.get('eager_peak_mib', float('nan')):.1f} | {r.get('load_average', float('nan')):.1f} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m sslfast.bench distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=OPS, default="clip_loss")
    p.add_argument("--ring", action="store_true", help="siglip_loss: the ring exchange of text chunks")
    p.add_argument("--global-batch", default="2048,8192", help="comma-separated global batch sizes")
    p.add_argument("--world-sizes", default="1,2,4")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per rank")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--max-eager", type=int, default=8192, help="largest N for the eager N x N contrast")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=None, help="folder for results.json / results.md")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        rank, world, init, out = args.worker.split(",")
        args.n = int(args.global_batch)
        worker(int(rank), int(world), init, out, args)
        return 0
    worlds = [int(w) for w in args.world_sizes.split(",")]
    batches = [int(n) for n in args.global_batch.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in batches:
            for world in worlds:
                ranks = _launch(world, n, args, tmp)
                row = dict(ranks[0], peak_mib=max(r["peak_mib"] for r in ranks),
                           step_s=max(r["step_s"] for r in ranks), n_local=max(r["n_local"] for r in ranks),
                       load_average=max(r["load_average"] for r in ranks))
                rows.append(row)
                print(_table([row], args).splitlines()[-1], flush=True)
    table = _table(rows, args)
    print("\n" + table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": rows,
                       "torch": torch.__version__}, f, indent=1)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
