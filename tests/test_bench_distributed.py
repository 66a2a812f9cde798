"""``python -m sslfast.bench distributed``: the multi-process case runs end to end at a tiny size
and writes its records (numbers are for benchmarks, not asserted here)."""

import json

import pytest
import torch

from sslfast.bench import distributed as bench


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="no torch.distributed with gloo")
def test_world_sizes_run_and_write(tmp_path, capsys):
    rc = bench.main(["--op", "siglip_loss", "--ring", "--global-batch", "24", "--world-sizes", "1,2", "--dim", "8",
                     "--steps", "1", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["world"], r["n_local"]) for r in rows] == [(1, 24), (2, 12)]
    assert all(r["peak_mib"] >= 0 and r["step_s"] > 0 for r in rows)
    assert "fused_peak_mib" in rows[0] and "eager_peak_mib" in rows[0]
    assert "| 24 | 2 | 12 |" in (tmp_path / "results.md").read_text()


def test_a_hung_group_is_killed_whole_after_the_timeout(tmp_path, monkeypatch):
    """--timeout bounds the whole group, and every worker is ended, not only the one waited on."""
    import subprocess
    import sys

    started, popen = [], subprocess.Popen

    def hanging_worker(cmd, *args, **kwargs):  # stands in for a rank stuck in a collective
        started.append(popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return started[-1]

    monkeypatch.setattr(bench.subprocess, "Popen", hanging_worker)
    args = bench.build_parser().parse_args(["--timeout", "1"])
    with pytest.raises(RuntimeError, match="timeout"):
        bench._launch(3, 24, args, str(tmp_path))
    assert len(started) == 3 and all(p.poll() is not None for p in started)
