"""Feature dropout on Cora's 2708 x 1433 matrix, forward + backward, one thread, thread clock,
median of 30: F.dropout (a Bernoulli mask, stored) against sslfast.drop_mask (the hash-keyed mask,
regenerated in backward) with and without the 1 / (1 - p) scale (functional.dropout), and a plain
multiply for scale. Two rounds. Output: dropout_step.txt."""

import time

import torch
import torch.nn.functional as F

import sslfast
from sslfast.functional import dropout

torch.set_num_threads(1)
x = torch.rand(2708, 1433, requires_grad=True)


def median_ms(fn, n=30):
    times = []
    for _ in range(n):
        t0 = time.thread_time()
        fn().sum().backward()
        times.append(time.thread_time() - t0)
    return sorted(times)[n // 2] * 1e3


for _ in range(2):
    for name, fn in (("F.dropout", lambda: F.dropout(x, 0.2, True)),
                     ("functional.dropout", lambda: dropout(x, 0.2)),
                     ("drop_mask (no scale)", lambda: sslfast.drop_mask(x, 0.2)),
                     ("x * 1.0", lambda: x * 1.0)):
        print(f"{name:22s} {median_ms(fn):7.1f} ms")
