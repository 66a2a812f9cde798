"""The counter-based uniforms of kernels/random.h in torch ops: ``hash_uniform(seed, index)``, a
SplitMix64 hash of (seed, index) on a 2^-24 grid. Dropout masks regenerate from it (the kernels
never store one); the references use this to apply the very same masks."""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _int64(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits (torch multiplies int64 mod 2^64)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _int64(0x9E3779B97F4A7C15)
_MIX1 = _int64(0xBF58476D1CE4E5B9)
_MIX2 = _int64(0x94D049BB133111EB)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


# Kept out of torch.compile graphs (a graph break runs it eagerly): fused into the DGI / GRACE /
# GraphMAE training steps, inductor's CPU codegen of this int64 hash failed (benchmarks/NOTES.md).
@torch.compiler.disable
def hash_uniform(seed: int, index: torch.Tensor) -> torch.Tensor:
    """float32 uniforms in [0, 1), one per entry of the int64 ``index`` tensor."""
    z = index.to(torch.int64) + 1
    z = z * _MIX1 + _int64(_int64(seed) * _GOLDEN)
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    return _shr(z, 40).to(torch.float32) * 2.0 ** -24


def keep_mask(seed: int, count: int, p: float, device=None) -> torch.Tensor:
    """Dropout's keep decisions (True = kept) for indices 0..count-1, probability p of dropping."""
    return hash_uniform(seed, torch.arange(count, device=device)) >= p
