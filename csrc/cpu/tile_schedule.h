// Deterministic parallel schedules over tile pairs (I, J) of row blocks.
//
// A tile updates state owned by two blocks (row I's logsumexp and row J's, or grad_I and
// grad_J). Rounds are built so that no block appears twice in a round: the tiles of one round
// run in parallel without atomics or per-tile buffers, and every block folds its tiles in the
// same order whatever the thread count, so results are bitwise reproducible.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "blas.h"

namespace sslfast::cpu {

using TilePair = std::pair<int64_t, int64_t>;
using Rounds = std::vector<std::vector<TilePair>>;

// Every pair I <= J of nb blocks once: a round of diagonal tiles, then the circle method
// (round-robin tournament) over the off-diagonal pairs.
inline Rounds symmetric_rounds(int64_t nb) {
  Rounds rounds(1);
  for (int64_t i = 0; i < nb; ++i) rounds[0].push_back({i, i});
  const int64_t n = nb + (nb % 2);  // odd nb: block nb is a dummy that sits the round out
  for (int64_t r = 0; r + 1 < n; ++r) {
    std::vector<TilePair> round;
    auto add = [&](int64_t a, int64_t b) {
      if (a < nb && b < nb) round.push_back({std::min(a, b), std::max(a, b)});
    };
    add(r, n - 1);
    for (int64_t k = 1; k < n / 2; ++k) add((r + k) % (n - 1), (r - k + n - 1) % (n - 1));
    if (!round.empty()) rounds.push_back(std::move(round));
  }
  return rounds;
}

// Every pair (I, J) of an nb x nb grid once: round r holds (I, (I + r) mod nb).
inline Rounds latin_rounds(int64_t nb) {
  Rounds rounds(nb);
  for (int64_t r = 0; r < nb; ++r)
    for (int64_t i = 0; i < nb; ++i) rounds[r].push_back({i, (i + r) % nb});
  return rounds;
}

// Runs tile_fn(I, J, thread) for every tile, round after round.
template <typename F>
void run_rounds(const Rounds& rounds, const F& tile_fn) {
  for (const auto& round : rounds) {
    at::parallel_for(0, int64_t(round.size()), 1, [&](int64_t begin, int64_t end) {
      SingleThreadedBlas one_blas_thread;
      for (int64_t p = begin; p < end; ++p) tile_fn(round[p].first, round[p].second, at::get_thread_num());
    });
  }
}

// Runs block_fn(I, thread) for every row block (each block owns its rows).
template <typename F>
void run_blocks(int64_t nb, const F& block_fn) {
  at::parallel_for(0, nb, 1, [&](int64_t begin, int64_t end) {
    SingleThreadedBlas one_blas_thread;
    for (int64_t i = begin; i < end; ++i) block_fn(i, at::get_thread_num());
  });
}

// Rows per block: 256 (BLAS-efficient tiles that stay in L2), smaller (down to 32) while that
// leaves fewer than 8 blocks, so small batches still spread over threads. A function of n only:
// the tiling, hence every summation order, is the same whatever the thread count.
inline int64_t block_rows(int64_t n) {
  int64_t b = 256;
  while (b > 32 && (n + b - 1) / b < 8) b /= 2;
  return b;
}

struct Blocking {
  int64_t n, size, count;
  explicit Blocking(int64_t n_) : n(n_), size(block_rows(n_)), count((n_ + size - 1) / size) {}
  int64_t begin(int64_t i) const { return i * size; }
  int64_t rows(int64_t i) const { return std::min(size, n - i * size); }
};

}  // namespace sslfast::cpu
