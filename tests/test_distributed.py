"""sslfast.distributed on CPU with gloo: every contrastive op with ``process_group`` equals the
single-process op on the concatenated batch (loss and every gradient, as DDP averages them), in
2 and 4 processes with uneven local batches; bad input raises on every rank instead of hanging.

Each world size is spawned once (tests/distributed_worker.py runs every case) and the results
are shared by the tests below through a module-scoped fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import sslfast

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
TIMEOUT_S = 240  # a hang in a collective must fail the test, not the CI job


def _launch(world, tmp):
    init = os.path.join(tmp, "init")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, WORKER, str(r), str(world), init, tmp], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(world)]


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"world{w}")
def ranks(request, tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    return request.param, _launch(request.param, str(tmp_path_factory.mktemp(f"world{request.param}")))


def _errors(ranks, section):
    """{case: {quantity: max over ranks of the max abs error}}; a failed case raises."""
    world, results = ranks
    out = {}
    for rank, result in enumerate(results):
        for case, errors in result[section].items():
            assert "error" not in errors, f"rank {rank}, {case}:\n{errors['error']}"
            for key, value in errors.items():
                out.setdefault(case, {})[key] = max(out.get(case, {}).get(key, 0.0), value)
    return out


def test_every_op_and_option_matches_the_single_process_loss_and_gradients(ranks):
    errors = _errors(ranks, "exact")
    assert len(errors) == 16, sorted(errors)
    for case, values in errors.items():
        for key, value in values.items():
            assert value < 1e-12, (case, key, value)  # float64 inputs
    print(f"\nworld {ranks[0]} max abs errors (float64):", json.dumps(errors, indent=1))


def test_low_precision_inputs_accumulate_in_float32(ranks):
    errors = _errors(ranks, "low_precision")
    assert errors["nt_xent float32"]["loss"] < 1e-5
    assert max(errors["nt_xent float32"].values()) < 1e-5
    assert errors["clip_loss bfloat16"]["loss"] < 1e-5  # the loss is float32 in both
    assert max(errors["clip_loss bfloat16"].values()) < 4e-3  # bf16 gradients: a few ulps


def test_autocast_matches_the_single_process_op_under_autocast(ranks):
    errors = _errors(ranks, "autocast")
    assert sorted(errors) == ["clip_loss", "nt_xent", "siglip_loss gather", "siglip_loss ring"]
    for case, values in errors.items():
        for key, value in values.items():
            assert value < 2e-4, (case, key, value)  # float32 math on both sides: only the summation order differs


def test_methods_with_a_process_group_match_one_process(ranks):
    errors = _errors(ranks, "methods")
    assert sorted(errors) == ["CLIP", "MoCo v2", "SimCLR"]
    for case, values in errors.items():
        for key, value in values.items():
            assert value < 1e-12, (case, key, value)


def test_bad_input_raises_on_every_rank(ranks):
    world, results = ranks
    for rank, result in enumerate(results):
        assert "error" not in result["bad_input"], result["bad_input"]
        assert len(result["bad_input"]) == 8
        for case, outcome in result["bad_input"].items():
            assert outcome["ok"], (rank, case, outcome["message"])
    first = results[0]["bad_input"]
    assert "image differs across ranks" in first["D differs across ranks"]["message"]
    assert "z1 differs across ranks" in first["dtype differs across ranks"]["message"]
    assert f"rank {world - 1} rejected its input" in first["bad input on one rank"]["message"]
    assert "z2 must have the shape" in results[world - 1]["bad_input"]["bad input on one rank"]["message"]
    assert "world_size" in first["world_size mismatch"]["message"]
    assert "temperature differs" in first["temperature differs"]["message"]
    assert "process_group" in first["not a process group"]["message"]
    assert first["other error on one rank"]["message"].startswith("RuntimeError")
    assert "rank 0 rejected its input (RuntimeError" in results[1]["bad_input"]["other error on one rank"]["message"]


def test_open_clip_distributed_parity(ranks):
    for rank, result in enumerate(ranks[1]):
        parity = result["open_clip"]
        if "skipped" in parity:
            pytest.skip(parity["skipped"])
        assert "error" not in parity, parity["error"]
        assert max(parity.values()) < 1e-12, (rank, parity)


def test_single_process_rejects_ring_without_group():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="ring"):
        sslfast.siglip_loss(x, x, torch.tensor(1.0), torch.tensor(0.0), ring=True)
    with pytest.raises(TypeError, match="process_group"):
        sslfast.nt_xent(x, x, process_group=object())
