"""``sslfast train --nproc N``: DDP over N CPU processes (gloo), re-executed through
torch.distributed.run; rank 0 alone writes the results."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from sslfast import train as T
from sslfast.__main__ import main


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="no scikit-learn (digits)")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="no torch.distributed with gloo")
def test_nproc_2_trains_and_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "sslfast", "train", "simclr", "--data", "digits", "--epochs", "1",
                           "--batch-size", "128", "--nproc", "2", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["nproc"] == 2 and result["batch_size"] == 128 and 0.0 <= result["value"] <= 1.0
    assert proc.stdout.count("linear_probe_acc = ") == 1  # rank 0 prints, rank 1 does not


def test_nproc_rejects_what_it_cannot_run(capsys):
    with pytest.raises(SystemExit):
        main(["train", "gae", "--nproc", "2"])
    assert "--nproc > 1 supports" in capsys.readouterr().err
    with pytest.raises(ValueError, match="torch.distributed.run"):  # not launched as ranks
        T.train("simclr", "digits", epochs=1, nproc=2, progress=False)
    with pytest.raises(ValueError, match="--nproc"):
        T.train("simclr", "digits", epochs=1, nproc=0, progress=False)
