"""pytest-benchmark suites: ``pytest benchmarks/bench_<family>.py --benchmark-only``.

Without pytest-benchmark the suites skip instead of failing: its common command-line flags are
accepted (and ignored) here so that ``--benchmark-only`` does not abort argument parsing.
"""

import pytest


def pytest_addoption(parser):
    """Registered only where pytest-benchmark has not (missing or ``-p no:benchmark``)."""
    group = parser.getgroup("benchmark (fallback: flags ignored without pytest-benchmark)")
    for flag in ("--benchmark-only", "--benchmark-skip", "--benchmark-disable",
                 "--benchmark-enable", "--benchmark-autosave"):
        try:
            group.addoption(flag, action="store_true", default=False, help="ignored")
        except ValueError:  # pytest-benchmark defined it
            pass
    for flag in ("--benchmark-json", "--benchmark-save", "--benchmark-columns",
                 "--benchmark-sort", "--benchmark-group-by", "--benchmark-min-rounds"):
        try:
            group.addoption(flag, action="store", default=None, help="ignored")
        except ValueError:
            pass


@pytest.fixture(autouse=True)
def _requires_pytest_benchmark(request):
    """Skip (not error) when the plugin is installed but disabled, e.g. ``-p no:benchmark``."""
    if "benchmark" in request.fixturenames and not request.config.pluginmanager.hasplugin(
            "benchmark"):
        pytest.skip("pytest-benchmark is not active")
