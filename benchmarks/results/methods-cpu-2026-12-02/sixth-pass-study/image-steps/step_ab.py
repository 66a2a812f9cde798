# ruff: noqa: E402, F403, F405, E741  (a study script: path setup before imports, shared helpers by *)
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # outputs beside the script
"""Full step, 4 interleaved arms (rotated order), 1 thread, thread clock:
 SS = bench 'sslfast' state under auto, REF = bench 'eager' state under reference,
 SS2 / REF2 = the same from a second, identical build (A/A controls: noise floor).
Also: the bench's statistic (median of 5 consecutive rounds) recomputed over sliding windows."""
import sys
import json
import random

sys.path.insert(0, HERE)
from common import *

R = int(sys.argv[1]) if len(sys.argv) > 1 else 60
names = sys.argv[2:] or ["clip", "mae", "simmim"]
out = {}
for name in names:
    _, s1 = build(name)
    _, s2 = build(name)
    arms = {
        "SS": lambda: bm.sslfast_step(s1),
        "REF": lambda: bm.eager_step(s1),
        "SS2": lambda: bm.sslfast_step(s2),
        "REF2": lambda: bm.eager_step(s2),
    }
    for _ in range(5):
        for f in arms.values():
            f()
    xs = {k: [] for k in arms}
    order = list(arms)
    for r in range(R):
        k = r % 4
        for a in order[k:] + order[:k]:
            xs[a].append(tt(arms[a]))
    m = {a: med(v) for a, v in xs.items()}

    def ratio(a, b):
        return med(xs[b]) / med(xs[a])

    # bench-style: median of 5 consecutive rounds, ratio eager/sslfast, over all windows
    w = [med(xs["REF"][i : i + 5]) / med(xs["SS"][i : i + 5]) for i in range(0, R - 4)]
    waa = [med(xs["REF2"][i : i + 5]) / med(xs["REF"][i : i + 5]) for i in range(0, R - 4)]
    # paired per-round ratio + bootstrap CI of the median ratio
    rnd = random.Random(0)
    boots = []
    for _ in range(2000):
        idx = [rnd.randrange(R) for _ in range(R)]
        boots.append(med([xs["REF"][i] for i in idx]) / med([xs["SS"][i] for i in idx]))
    boots.sort()
    res = dict(
        median_ms=m,
        min_ms={a: min(v) for a, v in xs.items()},
        ratio_REF_over_SS=ratio("SS", "REF"),
        ratio_REF2_over_SS2=ratio("SS2", "REF2"),
        AA_SS2_over_SS=ratio("SS", "SS2"),
        AA_REF2_over_REF=ratio("REF", "REF2"),
        boot95_REF_over_SS=(boots[50], boots[1950]),
        bench_style_5window_ratio=dict(
            min=min(w), max=max(w), median=med(w), frac_below_0_97=sum(x < 0.97 for x in w) / len(w)
        ),
        bench_style_5window_AA_REF2_over_REF=dict(min=min(waa), max=max(waa)),
        samples_ms=xs,
    )
    out[name] = res
    print(name, json.dumps({k: v for k, v in res.items() if k != "samples_ms"}), flush=True)
json.dump(out, open(HERE + "/step_ab.json", "w"), indent=1)
