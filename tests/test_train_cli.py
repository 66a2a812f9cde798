"""``sslfast train``: the command line end to end (tiny settings), its outputs and failures, and
one quick quality check (GAE on Cora)."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from sslfast import train as T
from sslfast.__main__ import main
from sslfast.data import planetoid_candidates

HAS_CORA = any((p / "ind.cora.graph").exists() for p in planetoid_candidates())
REQUIRED = {"method", "data", "metric", "value", "seed", "epochs", "seconds", "device", "backend"}


def test_list_through_python_m():
    out = subprocess.run([sys.executable, "-m", "sslfast", "train", "--list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in T.METHODS:
        assert name in out.stdout
    assert len(T.METHODS) == 14


@pytest.mark.parametrize("argv, metric", [
    (["gae", "--data", "sbm", "--epochs", "3"], "link_auc"),
    (["dgi", "--data", "sbm", "--epochs", "2"], "linear_probe_acc"),
    (["ddpm", "--epochs", "1", "--batch-size", "1024"], "mmd"),
    pytest.param(["simclr", "--data", "digits", "--epochs", "1"], "linear_probe_acc",
                 marks=pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="no scikit-learn")),
    pytest.param(["mae", "--data", "digits", "--epochs", "1"], "recon_mse",
                 marks=pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="no scikit-learn")),
])
def test_train_writes_results(tmp_path, capsys, argv, metric):
    out = tmp_path / "run"
    rc = main(["train", *argv, "--seed", "3", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert REQUIRED <= set(result) and result["metric"] == metric and result["seed"] == 3
    assert result["method"] == argv[0] and result["epochs"] == int(argv[argv.index("--epochs") + 1])
    assert len(result["loss_curve"]) >= 1 and result["seconds"] > 0
    # what ran: the recipe's options, the augmentations of the two-view methods, the source commit
    assert result["options"] == json.loads(json.dumps(T.RECIPES[argv[0]].for_data(result["data"]).options))
    assert ("augment" in result) == (argv[0] in T.AUGMENTED) and "commit" in result
    if metric in ("linear_probe_acc", "link_auc"):
        assert 0.0 <= result["value"] <= 1.0
    if metric in ("mmd", "recon_mse") or argv[0] == "simclr":
        assert result["baseline"] > 0
    assert os.path.getsize(out / "results.png") > 1000
    assert f"{metric} = " in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="no scikit-learn")
def test_results_record_what_ran_not_the_recipe_defaults(tmp_path, capsys):
    """results.json's options and augment are the ones the method was built with: MoCo v3's
    options (version 3, no queue, batch 256) where the recipe holds v2's, and SimSiam's own
    stronger views where the other methods share the default views."""
    out = tmp_path / "v3"
    assert main(["train", "moco", "--data", "digits", "--epochs", "1", "--moco-version", "3", "--seed", "1",
                 "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert result["method"] == "moco-v3" and result["options"]["version"] == 3
    assert "queue_size" not in result["options"] and T.RECIPES["moco"].options["version"] == 2
    out = tmp_path / "simsiam"
    assert main(["train", "simsiam", "--data", "digits", "--epochs", "1", "--seed", "1", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    augment = json.loads((out / "results.json").read_text())["augment"]
    assert augment["scale"] == [0.2, 1.0] and augment["noise_std"] == 0.1
    assert list(T._augment("digits").settings()["scale"]) != augment["scale"]  # not the shared default views


def test_sgd_recipe_scales_the_learning_rate_with_the_batch(tmp_path, monkeypatch, capsys):
    """A recipe with optimizer='sgd' (the SimSiam paper's setting, which the trials of
    benchmarks/results use) trains with SGD, momentum 0.9, its weight decay, and lr x batch / 256."""
    built = []
    make = T._optimizer
    monkeypatch.setitem(T.RECIPES, "simsiam", dataclasses.replace(T.RECIPES["simsiam"], optimizer="sgd", lr=0.05,
                                                                  batch_size=64, weight_decay=5e-4))
    monkeypatch.setattr(T, "_optimizer", lambda recipe, params, lr: built.append(make(recipe, params, lr)) or built[-1])
    assert main(["train", "simsiam", "--data", "digits", "--epochs", "1", "--seed", "0", "--out", str(tmp_path),
                 "--no-progress"]) == 0, capsys.readouterr().err
    (opt,) = built
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert group["initial_lr"] == pytest.approx(0.05 * 64 / 256)
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4


def test_failures_exit_nonzero_and_say_why(tmp_path, capsys):
    assert main(["train", "dgi", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(["train", "gae", "--data", "moons", "--out", str(tmp_path / "b"), "--no-progress"]) == 1
    assert "gae trains on" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "nosuchmethod"])
    assert exit_info.value.code != 0
    assert main(["frobnicate"]) == 2


@pytest.mark.skipif(not HAS_CORA, reason="Planetoid files not found")
def test_gae_on_cora_quality(tmp_path):
    """120 of the 400 default epochs: the public PyG example is at ~0.89 AUC there."""
    result = T.train("gae", "cora", epochs=120, seed=0, progress=False)
    assert result["value"] >= 0.87, result["value"]
    assert result["link_ap"] >= 0.85
