"""Train METHOD (sslfast train defaults) and probe its embeddings both ways: as the command does
(standardized features) and after L2-normalizing each embedding row first (GRACE's eval.py)."""

import sys
import json
import torch.nn.functional as F
from sslfast import train

orig = train.evaluation.linear_probe
seen = {}


def probe(tr, ytr, te, yte, va=None, yva=None, **kw):
    raw = orig(tr, ytr, te, yte, va, yva, **kw)
    n = lambda e: F.normalize(e.double(), dim=1) if e is not None else None
    l2 = orig(n(tr), ytr, n(te), yte, n(va), yva, **kw)
    seen.update(raw=raw["acc"], raw_val=raw["val_acc"], l2=l2["acc"], l2_val=l2["val_acc"])
    return raw


train.evaluation.linear_probe = probe
method, seed, data = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "cora"
train.main(
    [
        method,
        "--data",
        data,
        "--seed",
        seed,
        "--threads",
        "1",
        "--no-progress",
        "--out",
        f"/tmp/pn/{method}-{data}-{seed}",
    ]
)
print(json.dumps({"method": method, "data": data, "seed": int(seed), **seen}))
