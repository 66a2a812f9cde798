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
