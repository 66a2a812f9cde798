"""One training step (forward, backward, optimizer) of METHOD on DATA with the features dense and
as sparse CSR (what sslfast train feeds GAE, VGAE, DGI and GRACE), one thread, thread clock,
median of 7:  python sparse_step.py dgi citeseer. Output: sparse_step.txt."""

import argparse
import sys
import time
import warnings

import torch

import sslfast.train as T
from sslfast import data as datasets

warnings.simplefilter("ignore")
torch.set_num_threads(1)
name, data_name = sys.argv[1], sys.argv[2]
data = datasets.load(data_name)
recipe = T.RECIPES[name].for_data(data_name)
args = argparse.Namespace(method=name, data=data_name, epochs=1, batch_size=None, lr=recipe.lr, seed=0,
                          device=torch.device("cpu"), moco_version=2)
for label, x in (("dense", datasets.row_normalize(data.x)), ("sparse CSR", T.node_features(name, data.x, "cpu"))):
    torch.manual_seed(0)
    method = T.build_method(name, recipe, data, args)
    optimizer = T._optimizer(recipe, list(method.parameters()), recipe.lr)
    times = []
    for _ in range(7):
        t0 = time.thread_time()
        optimizer.zero_grad()
        method(x, data.edge_index).backward()
        optimizer.step()
        times.append(time.thread_time() - t0)
    print(f"{name} {data_name} {label:10s} {sorted(times)[3] * 1e3:7.1f} ms")
