"""The benchmark harness itself (sslfast.bench): CLI, output files, memory probe, errors.

Runs the CLI in-process on the hidden ``tiny`` size set without torch.compile, so it takes
seconds; the compile baseline is covered by making ``torch.compile`` fail on purpose.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from sslfast.bench import harness

MODES = {"fwd", "fwd+bwd"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops on a busy 2-core machine: one intra-op thread avoids spin-wait stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
OPS = {"nt_xent", "info_nce", "clip_loss", "siglip_loss"}


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    rc = harness.main(["--quick", "--only", "contrastive", "--sizes", "tiny", "--device", "cpu",
                       "--no-compile", "--no-progress", "--repeats", "2", "--warmup", "1",
                       "--out", str(out), *extra])
    return rc, out


def test_cli_quick_tiny_writes_json_markdown_png(tmp_path, capsys):
    rc, out = _run(tmp_path)
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "sslfast ms [p20-p80]" in stdout and "vs eager" in stdout
    for op in OPS:
        assert op in stdout

    data = json.loads((out / "results.json").read_text())
    env = data["environment"]
    for key in ("device_name", "torch", "triton", "git_commit", "date", "cpu_count",
                "backend_requested", "native_available"):
        assert key in env, key
    assert env["device"] == "cpu" and env["dtype"] == "float32"
    assert env["ceilings"]["copy_gbps"] > 0 and env["ceilings"]["matmul_tflops"] > 0
    assert env["git_commit"]  # a hash or "unknown"

    records = data["records"]
    assert {r["op"] for r in records} == OPS
    assert {r["mode"] for r in records} == MODES
    for r in records:
        assert r["family"] == "contrastive"
        assert r["backend"] in ("native", "triton", "reference")
        assert r["flops"] > 0 and r["rounds"] == 2
        for name in ("sslfast", "eager"):
            res = r["impls"][name]
            assert res["error"] is None, res
            assert 0 < res["p20_ms"] <= res["median_ms"] <= res["p80_ms"]
            assert len(res["samples_ms"]) == 2
            assert res["peak_mib"] is not None and res["peak_mib"] >= 0
            # required: the returned loss (+ the input gradients in fwd+bwd); scratch: the rest
            assert res["required_mib"] * harness.MiB > (4 if r["mode"] == "fwd+bwd" else 0)
            assert res["scratch_mib"] == pytest.approx(max(0.0, res["peak_mib"] - res["required_mib"]))
            assert res["tflops"] > 0
            assert res["pct_of_matmul"] == pytest.approx(100 * res["tflops"] / env["ceilings"]["matmul_tflops"])
        assert r["impls"]["compile"]["error"].startswith("skipped")
        assert r["speedup_vs_eager"] > 0 and r["speedup_vs_compile"] is None
    # Forward+backward is reported against the 6*N*M*D model, 8*N*M*D with recompute.
    nt = next(r for r in records if r["op"] == "nt_xent" and r["mode"] == "fwd+bwd")
    two_n, d = nt["params"]["two_n"], nt["params"]["D"]
    assert nt["flops"] == 6 * two_n * two_n * d
    assert nt["flops_recompute"] == 8 * two_n * two_n * d

    md = (out / "results.md").read_text()
    assert "| op | size | mode |" in md and md.count("| nt_xent") == 2
    assert env["torch"] in md and "measured ceilings" in md

    png = out / "results.png"
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summarize_writes_consistent_markdown(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"
    spec = importlib.util.spec_from_file_location("summarize", path)
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    rc, out = _run(tmp_path)
    assert rc == 0
    target = tmp_path / "RESULTS.md"
    assert summarize.main([str(out / "results.json"), "-o", str(target)]) == 0
    text = target.read_text()
    assert "## " in text and "### contrastive" in text and "measured ceilings" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(table) == 2 + len(records)  # header, rule, one row per record
    assert len({line.count("|") for line in table}) == 1  # every row has the header's cells


def test_every_family_runs_tiny(tmp_path):
    """Every family's tiny cases run through the whole harness (timing, memory probe, output
    bookkeeping, baselines such as torch.sparse.mm) without an error in any implementation."""
    out = tmp_path / "all"
    rc = harness.main(["--sizes", "tiny", "--device", "cpu", "--no-compile", "--no-progress", "--no-ceilings",
                       "--repeats", "1", "--warmup", "1", "--out", str(out)])
    records = json.loads((out / "results.json").read_text())["records"]
    assert rc == 0 and {r["family"] for r in records} >= {"contrastive", "diffusion", "masking", "gnn"}
    for r in records:
        for name, res in r["impls"].items():
            assert res["error"] is None or res["error"].startswith("skipped"), (r["op"], r["case"], name, res)


def test_headline_case_in_every_real_size_set():
    from sslfast.bench import contrastive

    for device in ("cpu", "cuda"):
        for sizes in ("quick", "full"):
            ctx = harness.Context(torch.device(device), torch.float32, sizes)
            heads = [c for c in contrastive.cases(ctx) if c.headline]
            assert [(c.op, c.label) for c in heads] == [("nt_xent", "2N=8192 D=128")]
            assert "fwd+bwd" in heads[0].modes


def test_peak_memory_of_a_known_allocation():
    mib64 = 64 * 1024 * 1024 // 4

    def alloc():
        x = torch.empty(mib64, dtype=torch.float32)
        x.fill_(1.0)
        return float(x[0])

    assert harness.measure_peak_mib(alloc, "cpu") == pytest.approx(64.0, abs=1.0)

    def two_sequential():  # 32 MiB, freed, then 32 MiB again: the peak is 32, not 64
        for _ in range(2):
            x = torch.ones(mib64 // 2)
            del x

    assert harness.measure_peak_mib(two_sequential, "cpu") == pytest.approx(32.0, abs=1.0)
    assert harness.measure_peak_mib(lambda: None, "cpu") == pytest.approx(0.0, abs=0.1)


def test_result_bytes_counts_new_outputs_and_grads_once():
    x = torch.randn(1000, requires_grad=True)
    y = torch.randn(250)
    inputs = harness.Inputs((x, y), {}, [x])
    out = (x * 2).sum()
    out.backward()
    fresh = torch.empty(500)
    # The loss (4 B) + x.grad (4000 B) + one 2000 B output returned twice; y is an input: free.
    assert harness.result_bytes((out, fresh, [fresh[:10], y]), inputs) == 4 + 4000 + 2000

    class Holder:  # an object returning tensors as attributes (a Graph), which may refer to itself
        def __init__(self):
            self.rows, self.cache, self.me = torch.empty(100, dtype=torch.int64), {"y": y}, self

    assert harness.result_bytes(Holder(), inputs) == 4000 + 800


def test_unknown_family_fails_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        harness.main(["--only", "nosuchfamily", "--device", "cpu", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown family 'nosuchfamily'" in err and "contrastive" in err
    assert not (tmp_path / "results.json").exists()


def test_compile_failure_is_recorded_not_raised(tmp_path, monkeypatch):
    def broken_compile(fn):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(harness, "_compile", broken_compile)
    out = tmp_path / "out"
    rc = harness.main(["--quick", "--only", "contrastive", "--sizes", "tiny", "--device", "cpu",
                       "--filter", "siglip", "--no-progress", "--repeats", "1",
                       "--out", str(out)])
    assert rc == 0
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["op"] for r in records] == ["siglip_loss", "siglip_loss"]
    for r in records:
        assert "no compiler here" in r["impls"]["compile"]["error"]
        assert r["impls"]["sslfast"]["median_ms"] > 0 and r["impls"]["eager"]["median_ms"] > 0
    assert "no compiler here" in (out / "results.md").read_text()


def test_quantile_matches_linear_interpolation():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert harness.quantile(xs, 0.5) == 3.0
    assert harness.quantile(xs, 0.2) == pytest.approx(1.8)
    assert harness.quantile(xs, 0.8) == pytest.approx(4.2)
    assert harness.quantile([7.0], 0.2) == 7.0


def test_median_ci_has_its_binomial_coverage_and_paired_ratio_pairs_rounds():
    xs = list(range(1, 31))
    assert harness.median_ci(xs) == (10, 21)  # the textbook ranks for n = 30 at 95%
    assert harness.median_ci(list(range(1, 16))) == (4, 12)
    assert harness.median_ci([3.0, 1.0]) == (1.0, 3.0)  # too few for 95%: the range
    # Coverage of a normal median over many draws: at least the nominal 95%.
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(400):
        lo, hi = harness.median_ci(torch.randn(15, generator=g).tolist())
        hits += lo <= 0.0 <= hi
    assert hits / 400 >= 0.93
    impls = {"eager": {"samples_ms": [2.0, 4.0, 3.0]}, "sslfast": {"samples_ms": [1.0, 4.0, 2.0]}}
    paired = harness.paired_ratio(impls)
    assert paired["median"] == 1.5 and paired["ci95"] == [1.0, 2.0] and paired["rounds"] == 3
    assert harness.paired_ratio({"sslfast": {"samples_ms": [1.0]}}) is None


def test_missing_matplotlib_and_tqdm_degrade_gracefully(tmp_path, monkeypatch, capsys):
    for name in ("matplotlib", "matplotlib.pyplot", "tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    out = tmp_path / "out"
    rc = harness.main(["--quick", "--only", "contrastive", "--sizes", "tiny", "--device", "cpu",
                       "--filter", "clip", "--no-compile", "--repeats", "1", "--out", str(out)])
    assert rc == 0
    assert (out / "results.json").exists() and (out / "results.md").exists()
    assert not (out / "results.png").exists()
    notes = json.loads((out / "results.json").read_text())["environment"]["notes"]
    assert any("matplotlib" in n for n in notes) and any("tqdm" in n for n in notes)
    assert "[1/1] clip_loss" in capsys.readouterr().err


def test_racecheck_triage_keeps_only_real_races():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "racecheck_triage.py"
    spec = importlib.util.spec_from_file_location("racecheck_triage", path)
    triage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(triage)
    bar = "========="
    same_pc = (f"{bar} Error: Race reported between Write access at _k+0x2bb0 in contrastive.py:190\n"
               f"{bar}     and Write access at _k+0x2bb0 in contrastive.py:190 [4 hazards]\n{bar} \n")
    real = (f"{bar} Error: Race reported between Write access at spmm_row+0x10 in spmm.cu:12\n"
            f"{bar}     and Read access at spmm_row+0x20 in spmm.cu:14 [2 hazards]\n{bar} \n")
    other_pc = same_pc.replace("0x2bb0 in contrastive.py:190 [4", "0x2bc0 in contrastive.py:190 [4")
    passed = "....  [100%]\n4 passed, 534 deselected in 19.47s\n"
    summary = f"{bar} RACECHECK SUMMARY: 32 hazards displayed (32 errors, 0 warnings)\n"
    once = triage.triage(same_pc + passed + summary)[0][0]
    assert triage.triage(same_pc * 3 + passed + summary) == ([once] * 3, [], [])
    benign, races, problems = triage.triage(same_pc + real + other_pc + passed + summary)
    assert len(benign) == 1 and len(races) == 2 and not problems
    assert triage.triage(same_pc + passed)[2] == ["no RACECHECK SUMMARY line: the run did not finish"]
    failed = passed.replace("4 passed", "1 failed, 3 passed")
    assert triage.triage(same_pc + failed + summary)[2] == ["pytest did not pass under racecheck"]


def test_replot_without_matplotlib_is_a_usage_error(tmp_path, monkeypatch, capsys):
    src = tmp_path / "results.json"
    src.write_text(json.dumps({"environment": {}, "records": []}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        harness.main(["--replot", str(src)])
    assert exit_info.value.code == 2
    assert "matplotlib" in capsys.readouterr().err


def test_replot_draws_one_row_per_family_at_a_readable_width(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    def record(family, op, speedup):
        impl = {"peak_mib": 1.0}
        return {"family": family, "op": op, "case": "N=8", "mode": "fwd", "device": "cpu", "dtype": "float32",
                "speedup_vs_eager": speedup, "speedup_vs_compile": None,
                "impls": {"sslfast": impl, "eager": impl, "compile": {"error": "skipped"}}}

    records = [record("contrastive", f"op{i}", 2.0) for i in range(40)] + [record("gnn", "spmm", 0.5)]
    src = tmp_path / "results.json"
    src.write_text(json.dumps({"environment": {}, "records": records}))
    assert harness.main(["--replot", str(src)]) == 0
    with Image.open(tmp_path / "results.png") as png:
        width, height = png.size
    # 41 cases: the old single row of vertical bars was 47 inches wide; panels stack instead.
    assert width == 1500 and height > width
    with pytest.raises(SystemExit):
        harness.main(["--replot", str(tmp_path / "missing.json")])


def test_methods_targets():
    """Graph methods: the ratio of medians against 1.5x. The others: slower than eager only when
    the whole 95% interval of the per-round ratio lies below 1 (a step that is mostly the method's
    own layers has a true ratio near 1, which two medians straddle by chance)."""
    from sslfast.bench import methods

    def impls(eager, ours):
        return {"eager": {"median_ms": harness.quantile(eager, 0.5), "samples_ms": eager},
                "sslfast": {"median_ms": harness.quantile(ours, 0.5), "samples_ms": ours}}

    clip = methods.method_case("clip", "mnist5k")
    even = impls([1.0, 0.97, 1.02, 0.99, 1.01, 0.98], [1.0] * 6)
    met, text = clip.target(methods.MODE, even)
    assert met and "95% CI 0.97-1.02" in text
    assert not clip.target(methods.MODE, impls([0.9] * 6, [1.0] * 6))[0]
    gae = methods.method_case("gae", "cora")
    assert gae.target(methods.MODE, impls([1.6] * 6, [1.0] * 6))[0]
    assert not gae.target(methods.MODE, impls([1.4] * 6, [1.0] * 6))[0]
