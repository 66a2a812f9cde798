"""Sort a compute-sanitizer racecheck log into known-benign Triton reports and real races.

    python benchmarks/racecheck_triage.py LOG     exit 0: no real race and the tests passed

Triton's reductions (tl.sum / tl.max across warps) stage partials in shared memory, and lanes
that hold replicated values store to the same address from the same instruction. racecheck
reports that as a write-write race of one PC with itself (triton-lang/triton#4736, #7264). The
first H100 run of `make gpu-check` (2026-11-23) reported 32 such hazards, all of this form, all in
sslfast/triton/contrastive.py reductions; the determinism tests passed on the same machine.

Benign here means exactly that pattern: Write and Write at the same kernel+PC, in a kernel whose
source is a Python (Triton) file. Anything else, a racecheck log without its summary (a crash),
or a pytest run that did not pass, fails.
"""

from __future__ import annotations

import re
import sys

_REPORT = re.compile(
    r"Race reported between (\w+) access at (\S+) in (\S+)\s*\n=+\s+and (\w+) access at (\S+) in (\S+)")
_SUMMARY = re.compile(r"RACECHECK SUMMARY: (\d+) hazards? displayed")
# pytest's closing line, e.g. "4 passed, 534 deselected in 19.47s" (-q) or "=== 1 failed ... ==="
_PYTEST_RESULT = re.compile(r"^=*\s*(\d+ (?:passed|failed|errors?)\b.* in [\d.]+s\b.*)$", re.MULTILINE)


def triage(text: str) -> tuple[list[str], list[str], list[str]]:
    """(benign reports, real reports, problems with the run itself)."""
    benign, real, problems = [], [], []
    for kind_a, where_a, src_a, kind_b, where_b, src_b in _REPORT.findall(text):
        line = f"{kind_a} {where_a} ({src_a}) vs {kind_b} {where_b} ({src_b})"
        same_store = kind_a == kind_b == "Write" and where_a == where_b
        triton_source = src_a.split(":")[0].endswith(".py")
        (benign if same_store and triton_source else real).append(line)
    if not _SUMMARY.search(text):
        problems.append("no RACECHECK SUMMARY line: the run did not finish")
    results = _PYTEST_RESULT.findall(text)
    if not results or re.search(r"\d+ (failed|errors?)\b", results[-1]) or "passed" not in results[-1]:
        problems.append("pytest did not pass under racecheck")
    return benign, real, problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        benign, real, problems = triage(f.read())
    print(f"racecheck: {len(benign)} known-benign Triton same-PC store reports, {len(real)} real")
    for line in real:
        print(f"  RACE {line}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    return 1 if real or problems else 0


if __name__ == "__main__":
    sys.exit(main())
