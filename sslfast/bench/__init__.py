"""Benchmarks: ``python -m sslfast.bench`` (see ``harness`` for what is measured and how).

A family adds ``sslfast/bench/<family>.py`` with::

    from .harness import Case, Context, Inputs, register_family

    @register_family("masking")
    def cases(ctx: Context) -> list[Case]: ...
"""

from .harness import Case, Context, Inputs, main, measure_peak_mib, register_family

__all__ = ["Case", "Context", "Inputs", "main", "measure_peak_mib", "register_family"]
