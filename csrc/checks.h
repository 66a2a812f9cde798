// Input checks for the C++ ops. The public Python functions validate first and raise
// ValueError/TypeError naming the argument; these guard direct torch.ops.sslfast calls.
#pragma once

#include <ATen/ATen.h>

#define CHECK_CPU(x) TORCH_CHECK((x).device().is_cpu(), #x " must be a CPU tensor, got ", (x).device())
#define CHECK_CONTIGUOUS(x) TORCH_CHECK((x).is_contiguous(), #x " must be contiguous")
#define CHECK_DIM(x, n) TORCH_CHECK((x).dim() == (n), #x " must be " #n "-D, got shape ", (x).sizes())
#define CHECK_FLOAT_OR_DOUBLE(x)                                                   \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kDouble, \
              #x " must be float32 or float64 for the CPU kernels, got ", (x).scalar_type())
#define CHECK_SAME_DTYPE(x, y) \
  TORCH_CHECK((x).scalar_type() == (y).scalar_type(), #x " and " #y " must have the same dtype")
#define CHECK_SHAPE(x, ...)                                                                                  \
  TORCH_CHECK((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape (" #__VA_ARGS__ "), got ", \
              (x).sizes())
#define CHECK_ONE_ELEMENT(x) TORCH_CHECK((x).numel() == 1, #x " must have one element, got shape ", (x).sizes())
#define CHECK_EMBEDDINGS(x) \
  CHECK_CPU(x);             \
  CHECK_CONTIGUOUS(x);      \
  CHECK_DIM(x, 2);          \
  CHECK_FLOAT_OR_DOUBLE(x); \
  TORCH_CHECK((x).size(0) > 0 && (x).size(1) > 0, #x " must be non-empty, got shape ", (x).sizes())
