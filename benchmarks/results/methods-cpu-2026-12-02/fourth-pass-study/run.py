"""The harness behind this folder's trials: `sslfast train` with recipe fields, method options or
augmentation settings overridden, one thread, no progress bar.

    python run.py NAME METHOD [field=value ...] [opt.key=value ...] [aug.key=value ...] [fixpred=1] -- [train args]

field=value replaces a Recipe field (lr=0.001, epochs=60, weight_decay=5e-4); opt.key=value a method
option (opt.shuffle_bn=4, opt.decoder_dim=128); aug.key=value an ImageAugment setting of the two-view
methods (aug.scale=(0.2,1.0), aug.noise_std=0.1); fixpred=1 gives SimSiam's predictor a constant
learning rate (the paper's --fix-pred-lr). The linear probe's inputs are saved as probe_inputs.pt
(the GRACE probe study, probe_study.py). Output: /tmp/exp/NAME/results.json.
"""

import ast
import dataclasses
import os
import sys

import torch

import sslfast.methods as M
import sslfast.train as T

name, method, *rest = sys.argv[1:]
extra = []
if "--" in rest:
    i = rest.index("--")
    rest, extra = rest[:i], rest[i + 1:]
fields, opts, aug = {}, {}, {}
for kv in rest:
    k, v = kv.split("=", 1)
    v = ast.literal_eval(v)
    if k.startswith("opt."):
        opts[k[4:]] = v
    elif k.startswith("aug."):
        aug[k[4:]] = v
    else:
        fields[k] = v
fix_pred = fields.pop("fixpred", 0)
recipe = T.RECIPES[method]
if opts:
    fields["options"] = {**recipe.options, **opts}
# The overrides win over a data set's own settings too (GraphMAE's and GRACE's CiteSeer entries).
per_data = {}
for data_name, over in recipe.per_data.items():
    per_data[data_name] = {**over, **fields}
    if opts:  # the data set's own options, the overrides on top
        per_data[data_name]["options"] = {**over.get("options", recipe.options), **opts}
T.RECIPES[method] = dataclasses.replace(recipe, **fields, per_data=per_data)
if aug:
    views = {"scale": (0.4, 1.0), "flip_p": 0.0, "noise_std": 0.05, **aug}
    T._augment = lambda data_name, overrides=None: M.ImageAugment(**views)

if fix_pred:  # the predictor in its own parameter group, outside the cosine schedule
    built = {}
    build_method, make_optimizer, make_schedule = T.build_method, T._optimizer, T._cosine_schedule

    def build(*a, **k):
        built["method"] = build_method(*a, **k)
        return built["method"]

    def optimizer(recipe, params, lr):
        pred = {id(p) for p in built["method"].predictor.parameters()}
        opt = make_optimizer(recipe, [p for p in params if id(p) not in pred], lr)
        opt.add_param_group({"params": [p for p in params if id(p) in pred], "lr": lr})
        return opt

    def schedule(optimizer, total, warmup=0):
        cosine = make_schedule(optimizer, total, warmup).lr_lambdas[0]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [cosine, lambda step: 1.0])

    T.build_method, T._optimizer, T._cosine_schedule = build, optimizer, schedule

linear_probe = T.evaluation.linear_probe


def saving_probe(*a, **k):
    os.makedirs(f"/tmp/exp/{name}", exist_ok=True)
    torch.save((a, k), f"/tmp/exp/{name}/probe_inputs.pt")
    return linear_probe(*a, **k)


T.evaluation.linear_probe = saving_probe
sys.exit(T.main([method, "--threads", "1", "--no-progress", "--out", f"/tmp/exp/{name}"] + extra))
