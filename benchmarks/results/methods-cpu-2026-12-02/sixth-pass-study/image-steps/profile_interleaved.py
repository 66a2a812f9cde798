# ruff: noqa: E402, F403, F405, E741  (a study script: path setup before imports, shared helpers by *)
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # outputs beside the script
"""Per-op self CPU ms/step, sslfast vs reference, with one-step profiles alternated (rotated order)
so machine drift hits both equally. 1 thread, record_shapes. Also a table grouped by op+input shape
restricted to ops whose counts differ between backends (the fused-op footprint)."""
import sys
import collections

sys.path.insert(0, HERE)
from common import *
from torch.profiler import profile, ProfilerActivity

R = int(sys.argv[1]) if len(sys.argv) > 1 else 15
names = sys.argv[2:] or ["clip", "mae", "simmim"]
for name in names:
    _, states = build(name)
    fns = {"sslfast": lambda: bm.sslfast_step(states), "reference": lambda: bm.eager_step(states)}
    for _ in range(5):
        for f in fns.values():
            f()
    agg = {k: collections.defaultdict(lambda: [0.0, 0]) for k in fns}
    aggs = {k: collections.defaultdict(lambda: [0.0, 0]) for k in fns}
    for r in range(R):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                fns[k]()
            for e in prof.key_averages():
                agg[k][e.key][0] += e.self_cpu_time_total / 1e3 / R
                agg[k][e.key][1] += e.count / R
            for e in prof.key_averages(group_by_input_shape=True):
                kk = (e.key, str(e.input_shapes)[:90])
                aggs[k][kk][0] += e.self_cpu_time_total / 1e3 / R
                aggs[k][kk][1] += e.count / R
    tot = {k: sum(v[0] for v in agg[k].values()) for k in fns}
    keys = set(agg["sslfast"]) | set(agg["reference"])
    rows = sorted(keys, key=lambda q: -abs(agg["sslfast"].get(q, [0, 0])[0] - agg["reference"].get(q, [0, 0])[0]))
    L = [
        f"== {name} ({R} interleaved single-step profiles each): total self CPU ms/step sslfast {tot['sslfast']:.2f} "
        f"reference {tot['reference']:.2f} diff {tot['sslfast'] - tot['reference']:+.2f}",
        f"{'op':52s} {'ss ms':>8s} {'ref ms':>8s} {'diff':>8s} {'ss n':>6s} {'ref n':>6s}",
    ]
    for q in rows[:30]:
        s = agg["sslfast"].get(q, [0, 0])
        rr = agg["reference"].get(q, [0, 0])
        L.append(f"{q[:52]:52s} {s[0]:8.3f} {rr[0]:8.3f} {s[0] - rr[0]:+8.3f} {s[1]:6.1f} {rr[1]:6.1f}")
    # fused-op footprint: (op, shape) entries whose call count differs between backends
    L.append("-- (op, input shapes) whose call counts differ (the fused-op footprint):")
    fp = {"sslfast": 0.0, "reference": 0.0}
    allk = set(aggs["sslfast"]) | set(aggs["reference"])
    diffk = [q for q in allk if abs(aggs["sslfast"].get(q, [0, 0])[1] - aggs["reference"].get(q, [0, 0])[1]) > 0.01]
    for q in sorted(diffk, key=lambda q: -(aggs["sslfast"].get(q, [0, 0])[0] + aggs["reference"].get(q, [0, 0])[0])):
        s = aggs["sslfast"].get(q, [0, 0])
        rr = aggs["reference"].get(q, [0, 0])
        fp["sslfast"] += s[0]
        fp["reference"] += rr[0]
        if s[0] + rr[0] > 0.01:
            L.append(f"{q[0][:34]:34s} {q[1][:60]:60s} ss {s[0]:7.3f} ({s[1]:.0f}x)  ref {rr[0]:7.3f} ({rr[1]:.0f}x)")
    L.append(
        f"footprint total self ms/step: sslfast {fp['sslfast']:.3f}  reference {fp['reference']:.3f}  "
        f"diff {fp['sslfast'] - fp['reference']:+.3f}"
    )
    txt = "\n".join(L)
    print(txt, flush=True)
    open(HERE + f"/prof_interleaved_{name}.txt", "w").write(txt + "\n")
