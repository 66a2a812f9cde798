"""Builds sslfast._C: the C++ CPU kernels always; CUDA sources when a CUDA torch and nvcc exist.

SSLFAST_CUDA=0 / 1 forces the CUDA part off / on. SSLFAST_SKIP_EXTENSION=1 declares no extension
(the Makefile's editable install: metadata only; the extension is built by build_ext --inplace).
CUDA sources: csrc/cuda/*.cpp (host glue, TORCH_LIBRARY_IMPL(sslfast, CUDA)) + kernels/*.cu (plain
CUDA, no torch headers).
"""

import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _want_cuda():
    forced = os.environ.get("SSLFAST_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


# No -march / -mavx2: the build runs on any machine of its architecture. The CPU kernels compile
# their AVX2 + FMA paths as well and pick them at run time (csrc/cpu/isa.h). C++20 is what torch's
# headers are written for (with C++17 every file warned about bit-field initializers).
# -Wno-psabi: the baseline pass of the kernels passes 32-byte vector types (csrc/cpu/spmm_impl.h)
# by memory, which GCC notes as an ABI change; they never cross the library's interface.
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-Wno-psabi"]

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

if os.environ.get("SSLFAST_SKIP_EXTENSION") == "1":
    setup()
else:
    setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
