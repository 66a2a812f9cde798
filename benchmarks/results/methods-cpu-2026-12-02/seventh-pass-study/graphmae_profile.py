"""Where a GraphMAE training step (sslfast backend, as the methods bench builds it on Cora) spends
its time: torch.profiler over STEPS steps after one warm-up, one thread, ops by self CPU time.
python graphmae_profile.py [STEPS]"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from sslfast.bench import methods as bm

torch.set_num_threads(1)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
states = bm.method_case("graphmae", "cora").make_inputs("cpu", None, True).args[0]
bm.sslfast_step(states)
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(steps):
        bm.sslfast_step(states)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60))
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40,
                                                         max_name_column_width=30, max_shapes_column_width=90))
