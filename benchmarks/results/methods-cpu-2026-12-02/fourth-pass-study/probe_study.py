"""The GRACE probe study: five linear-probe protocols on the same frozen embeddings (the probe
inputs run.py saved), to tell the probe from the embedding. Output: probe_study.txt.

    python probe_study.py /tmp/exp/grace-dump-s0/probe_inputs.pt ...
"""

import sys

import torch
import torch.nn.functional as F

from sslfast.eval.linear_probe import WEIGHT_DECAYS, _accuracy, fit_logistic_regression

torch.set_num_threads(1)


def grid(data, num_classes, fit, val, test, weight_decays=WEIGHT_DECAYS):
    """(val acc, chosen L2, test acc) of the L-BFGS probe, the L2 chosen on the validation split."""
    (_, ytr), (_, yva), (_, yte) = data
    best = None
    for wd in weight_decays:
        w, b = fit_logistic_regression(fit, ytr, num_classes, wd)
        acc = _accuracy(val, yva, w, b)
        if best is None or acc > best[0]:
            best = (acc, wd, _accuracy(test, yte, w, b))
    return best


def dgi_protocol(tr, ytr, te, yte, num_classes, runs=50):
    """DGI's evaluation: raw embeddings, Adam 0.01, 100 epochs, no L2, mean test accuracy of 50 runs."""
    accs = []
    for r in range(runs):
        torch.manual_seed(r)
        lin = torch.nn.Linear(tr.shape[1], num_classes).double()
        torch.nn.init.xavier_uniform_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        opt = torch.optim.Adam(lin.parameters(), lr=0.01)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(lin(tr), ytr).backward()
            opt.step()
        accs.append(float((lin(te).argmax(1) == yte).double().mean()))
    return None, None, sum(accs) / len(accs)


for path in sys.argv[1:]:
    (tr, ytr, te, yte, va, yva), kwargs = torch.load(path)
    c = kwargs["num_classes"]
    tr, te, va = tr.double(), te.double(), va.double()
    data = ((tr, ytr), (va, yva), (te, yte))
    m, s = tr.mean(0), tr.std(0).clamp(min=1e-8)
    every = torch.cat([tr, va, te])
    m2, s2 = every.mean(0), every.std(0).clamp(min=1e-8)
    out = {
        "std-train (current)": grid(data, c, (tr - m) / s, (va - m) / s, (te - m) / s),
        "std-all-rows": grid(data, c, (tr - m2) / s2, (va - m2) / s2, (te - m2) / s2),
        "l2-rows": grid(data, c, F.normalize(tr, dim=1), F.normalize(va, dim=1), F.normalize(te, dim=1),
                        tuple(w / 100 for w in WEIGHT_DECAYS)),
        "raw": grid(data, c, tr, va, te),
        "dgi-protocol": dgi_protocol(tr, ytr, te, yte, c),
    }
    print(path)
    for name, (val_acc, wd, test_acc) in out.items():
        print(f"  {name:22s} val {val_acc if val_acc is None else round(val_acc, 3)} wd {wd} test {test_acc:.4f}")
