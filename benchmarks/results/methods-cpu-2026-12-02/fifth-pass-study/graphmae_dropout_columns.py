"""GraphMAE's Cora training step three ways, side by side, one thread, thread clock, median of 9,
built as the methods bench builds it (sslfast/bench/methods.py): the sslfast step; the eager step
(use_backend("reference"): the feature dropout is then the reference's hashed mask, built from
torch integer ops); and the eager step with the feature dropout replaced by F.dropout (what an
eager GraphMAE would use). The bench's eager column is the second; the third says how much of
the ratio the reference's hash adds. Output: graphmae_dropout_columns.txt."""

import time

import torch
import torch.nn.functional as F

import sslfast
import sslfast.methods.backbones as backbones
import sslfast.methods.graphmae as graphmae
from sslfast.bench import methods as bench_methods


def median_ms(step, n=9):
    step()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.thread_time()
        step()
        times.append(time.thread_time() - t0)
    return sorted(times)[n // 2] * 1e3


def f_dropout(x, p, training=True, **_):
    return F.dropout(x, p, training)


torch.set_num_threads(1)
states = bench_methods.method_case("graphmae", "cora").make_inputs("cpu", torch.float32, False).args[0]
ours = median_ms(states["sslfast"].step)
with sslfast.use_backend("reference"):
    eager = median_ms(states["eager"].step)
    backbones.dropout, graphmae.dropout = f_dropout, f_dropout
    eager_f = median_ms(states["eager"].step)
print(f"sslfast                      {ours:7.1f} ms")
print(f"eager (reference dropout)    {eager:7.1f} ms  {eager / ours:.2f}x")
print(f"eager with F.dropout         {eager_f:7.1f} ms  {eager_f / ours:.2f}x")
