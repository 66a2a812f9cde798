"""Builds sslfast._C: the C++ CPU kernels always; CUDA sources when a CUDA torch and nvcc exist.

SSLFAST_CUDA=0 / 1 forces the CUDA part off / on. CUDA sources: csrc/cuda/*.cpp (host glue,
TORCH_LIBRARY_IMPL(sslfast, CUDA)) + kernels/*.cu (plain CUDA, no torch headers).
"""

import glob
import os
import platform

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _cpu_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return " avx2 " in flags.replace("\n", " ") and " fma " in flags.replace("\n", " ")
    except OSError:
        return False


def _want_cuda():
    forced = os.environ.get("SSLFAST_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
if platform.machine() in ("x86_64", "AMD64") and _cpu_has_avx2():
    # The vectorized exp/log paths in csrc/cpu/tile_math.h; a scalar path is compiled otherwise.
    cxx_flags += ["-mavx2", "-mfma"]

sources = _sources("csrc/*.cpp") + _sources("csrc/autograd/*.cpp") + _sources("csrc/cpu/*.cpp")
cuda_sources = _sources("csrc/cuda/*.cpp") + _sources("kernels/*.cu")

if _want_cuda() and cuda_sources:
    extension = CUDAExtension(
        "sslfast._C",
        sources + cuda_sources,
        extra_compile_args={
            "cxx": cxx_flags + ["-DSSLFAST_WITH_CUDA"],
            "nvcc": ["-O3", "-std=c++17", "-lineinfo", "-DSSLFAST_WITH_CUDA",
                     "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"],
        },
        extra_link_args=["-fopenmp"],
    )
else:
    extension = CppExtension("sslfast._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=["-fopenmp"])

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
