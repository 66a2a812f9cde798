"""One GraphMAE training step as the methods bench builds it (Cora) or as `sslfast train` does
(CiteSeer): python graphmae_step.py DATA REPEATS [sslfast,eager]; thread clock, NT threads (default 1)."""

import sys
import time
import statistics
import torch
from sslfast.bench import methods as bm

torch.set_num_threads(int(__import__("os").environ.get("NT", "1")))
data = sys.argv[1] if len(sys.argv) > 1 else "cora"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
case = bm.method_case("graphmae", data) if data == "cora" else None
if data == "citeseer":
    import argparse
    import copy
    from sslfast import data as D, train as R

    d = D.load("citeseer")
    rec = R.RECIPES["graphmae"].for_data("citeseer")
    args = argparse.Namespace(
        method="graphmae",
        data="citeseer",
        epochs=1,
        batch_size=None,
        lr=rec.lr,
        seed=0,
        device=torch.device("cpu"),
        moco_version=2,
    )
    torch.manual_seed(0)
    m = R.build_method("graphmae", rec, d, args)
    batch = bm._make_batch("graphmae", "node", d, None, "cpu")
    states = {}
    for impl in ("sslfast", "eager"):
        mm = copy.deepcopy(m)
        opt = R._optimizer(rec, [p for p in mm.parameters()], rec.lr)
        states[impl] = bm._StepState(mm, opt, batch)
else:
    states = case.make_inputs("cpu", None, True).args[0]
impls = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sslfast", "eager"]
fns = {"sslfast": bm.sslfast_step, "eager": bm.eager_step}
t = {k: [] for k in impls}
for r in range(reps + 1):
    for k in impls:
        c = time.thread_time()
        fns[k](states)
        e = time.thread_time() - c
        if r:
            t[k].append(e * 1e3)
for k in impls:
    print(k, "median ms %.1f" % statistics.median(t[k]), "min %.1f" % min(t[k]))
if len(impls) == 2:
    print("ratio %.3f" % (statistics.median(t["eager"]) / statistics.median(t["sslfast"])))
