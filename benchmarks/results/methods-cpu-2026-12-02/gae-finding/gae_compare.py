"""PyG examples/autoencoder.py (GAE, Cora, 400 epochs) with PyG's or sslfast's GCNConv.

Variants (--impl):
  pyg        PyG GCNConv (the example as is)
  sslfast    sslfast.nn.GCNConv swapped in, nothing else changed
  sslfast_w  sslfast convs, initial weights copied from a PyG encoder built from the same seed
             (same draws as 'pyg': isolates the conv from the init RNG stream)
  sslfast_fixed  sslfast convs given a reset_parameters() (glorot weight, zero bias), the method
             PyG's GAE.__init__ -> reset(encoder) calls; without it reset() falls through to
             nn.Linear.reset_parameters (kaiming uniform, a=sqrt(5))
  pyg_kaiming    PyG convs re-initialized after GAE() the way sslfast's are without the fix
  pyg_tneg   PyG convs, negatives from sslfast.negative_sampling(torch RNG) instead of PyG's
             negative_sampling (Python's random module)
Prints one JSON line per seed: final-epoch test AUC / AP.
"""
import argparse
import json
import os
import random
import sys
import time
sys.path.insert(0, os.environ.get("SSLFAST_CHECKOUT", "."))
import numpy as np
import torch
import torch_geometric.transforms as T
from torch_geometric.datasets import Planetoid
from torch_geometric.nn import GAE, GCNConv as PygGCN
import sslfast
from sslfast.nn import GCNConv as FastGCN

p = argparse.ArgumentParser()
p.add_argument("--impl", default="pyg")
p.add_argument("--seeds", default="0-3")
p.add_argument("--epochs", type=int, default=400)
args = p.parse_args()
torch.set_num_threads(1)


class FixedGCN(FastGCN):
    def reset_parameters(self):
        from sslfast.nn.gnn import _glorot_
        _glorot_(self.lin.weight)
        torch.nn.init.zeros_(self.bias)


lo, hi = map(int, args.seeds.split("-"))


class Enc(torch.nn.Module):
    def __init__(self, conv, cin, cout):
        super().__init__()
        self.conv1 = conv(cin, 2 * cout)
        self.conv2 = conv(2 * cout, cout)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


for seed in range(lo, hi + 1):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    split = T.RandomLinkSplit(num_val=0.05, num_test=0.1, is_undirected=True, split_labels=True,
                              add_negative_train_samples=False)
    transform = T.Compose([T.NormalizeFeatures(), split])
    train_data, val_data, test_data = Planetoid(os.environ.get("PYG_PLANETOID", "data"), "Cora", transform=transform)[0]
    cin = train_data.num_features
    if args.impl in ("pyg", "pyg_tneg", "pyg_kaiming"):
        enc = Enc(PygGCN, cin, 16)
    elif args.impl == "sslfast":
        enc = Enc(FastGCN, cin, 16)
    elif args.impl == "sslfast_w":
        ref = Enc(PygGCN, cin, 16)
        enc = Enc(FastGCN, cin, 16)
        with torch.no_grad():
            for a, b in ((enc.conv1, ref.conv1), (enc.conv2, ref.conv2)):
                a.lin.weight.copy_(b.lin.weight)
                a.bias.copy_(b.bias)
    if args.impl == "sslfast_fixed":
        enc = Enc(FixedGCN, cin, 16)
    model = GAE(enc)
    if args.impl == "pyg_kaiming":
        for conv in (enc.conv1, enc.conv2):
            torch.nn.init.kaiming_uniform_(conv.lin.weight, a=5 ** 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        opt.zero_grad()
        z = model.encode(train_data.x, train_data.edge_index)
        if args.impl == "pyg_tneg":
            pos = train_data.pos_edge_label_index
            neg = sslfast.negative_sampling(pos, z.shape[0], pos.shape[1])
            loss = model.recon_loss(z, pos, neg)
        else:
            loss = model.recon_loss(z, train_data.pos_edge_label_index)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.eval()
            zt = model.encode(test_data.x, test_data.edge_index)
            auc, ap = model.test(zt, test_data.pos_edge_label_index, test_data.neg_edge_label_index)
    record = {"impl": args.impl, "seed": seed, "auc": auc, "ap": ap, "s": round(time.time() - t0, 1)}
    print(json.dumps(record), flush=True)
