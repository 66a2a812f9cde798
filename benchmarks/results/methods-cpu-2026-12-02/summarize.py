"""Collects the quality runs of this folder (``<method>[-<data>]-seed<S>/results.json``) into the
table of README.md: mean +- std over seeds, the target, the published number, the command.

    python benchmarks/results/methods-cpu-2026-12-02/summarize.py
"""

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (method, data) -> (target text, published, comparator, threshold or None)
TARGETS = {
    ("dgi", "cora"): ("linear probe >= 0.81", "82.3 +- 0.6 (DGI)", ">=", 0.81),
    ("grace", "cora"): ("linear probe >= 0.81", "83.3 (GRACE, random splits)", ">=", 0.81),
    ("graphmae", "cora"): ("linear probe >= 0.82", "84.2 +- 0.4 (GraphMAE)", ">=", 0.82),
    ("dgi", "citeseer"): ("linear probe >= 0.70", "71.8 +- 0.7 (DGI)", ">=", 0.70),
    ("graphmae", "citeseer"): ("linear probe >= 0.71", "73.4 +- 0.4 (GraphMAE)", ">=", 0.71),
    ("gae", "cora"): ("AUC >= 0.90", "91.0 (GAE)", ">=", 0.90),
    ("vgae", "cora"): ("AUC >= 0.90", "91.4 (VGAE)", ">=", 0.90),
    ("simclr", "mnist5k"): ("probe >= 0.95 and >= untrained + 0.02", "-", "probe", 0.95),
    ("moco", "mnist5k"): ("probe >= 0.95 and >= untrained + 0.02", "-", "probe", 0.95),
    ("byol", "mnist5k"): ("probe >= 0.95 and >= untrained + 0.02", "-", "probe", 0.95),
    ("simsiam", "mnist5k"): ("probe >= 0.95 and >= untrained + 0.02", "-", "probe", 0.95),
    ("mae", "mnist5k"): ("MSE <= 0.7 x per-patch-mean baseline", "-", "ratio", 0.7),
    ("simmim", "mnist5k"): ("MSE <= 0.7 x per-patch-mean baseline", "-", "ratio", 0.7),
    ("ddpm", "moons"): ("MMD <= 2 x MMD(half, half)", "-", "ratio", 2.0),
}


def fmt(values, digits=4):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def cpu(rs):
    """Process CPU seconds (what the run costs without other load) and the thread count."""
    values = [r["cpu_seconds"] for r in rs if r.get("cpu_seconds") is not None]
    threads = sorted({r.get("threads") for r in rs})
    return (f"{max(values):.0f}" if values else "n/a") + ", " + "/".join(str(t) for t in threads)


def commits(rs):
    """The source commits the runs came from (results.json ``commit``; "-" for runs before it was recorded)."""
    return "/".join(sorted({r.get("commit") or "-" for r in rs}))


def main():
    runs = {}
    for path in sorted(HERE.glob("*/results.json")):
        r = json.loads(path.read_text())
        if "method" not in r:  # a benchmark run (bench-*/), not a training run
            continue
        runs.setdefault((r["method"], r["data"]), []).append((path.parent.name, r))
    lines = ["| method | data | metric | mean ± std (seeds) | baseline | target | met | published | wall s (max) "
             "| CPU s (max), threads | commit | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, data), items in sorted(runs.items(), key=lambda kv: (list(TARGETS).index(kv[0])
                                                                      if kv[0] in TARGETS else 99, kv[0])):
        rs = [r for _, r in items]
        values = [r["value"] for r in rs]
        baselines = [r["baseline"] for r in rs if r.get("baseline") is not None]
        target = TARGETS.get((method, data))
        met = "-"
        if target:
            kind, threshold = target[2], target[3]
            mean = statistics.mean(values)
            if kind == ">=":
                met = "yes" if mean >= threshold else "**no**"
            elif kind == "probe":
                gain = mean - statistics.mean(baselines)
                met = "yes" if mean >= threshold and gain >= 0.02 else f"**no** (+{gain:.3f})"
            else:
                ratio = mean / statistics.mean(baselines)
                met = ("yes" if ratio <= threshold else "**no**") + f" ({ratio:.2f}x)"
        seeds = ",".join(str(r["seed"]) for r in rs)
        extra = " --moco-version 3" if method == "moco-v3" else ""
        name = "moco" if method == "moco-v3" else method
        command = f"`sslfast train {name} --data {data}{extra} --seed S`"
        lines.append(f"| {method} | {data} | {rs[0]['metric']} | {fmt(values)} ({seeds}) | "
                     f"{fmt(baselines) if baselines else '-'} | {target[0] if target else '-'} | {met} | "
                     f"{target[1] if target else '-'} | {max(r['seconds'] for r in rs):.0f} | {cpu(rs)} | "
                     f"{commits(rs)} | {command} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
