// The dropout keep-factor loop (csrc/cpu/keep_factors.h) built for x86-64-v4 (AVX-512) and for
// the baseline, side by side on 2708 x 1433 entries (Cora's feature matrix):
//   g++ -O3 -std=c++20 keep_factors_micro.cpp -o /tmp/kf && /tmp/kf
#include <cstdint>
#include <chrono>
#include <cstdio>
#include <vector>
#include "../../../../kernels/random.h"
using namespace sslfast;
__attribute__((target_clones("arch=x86-64-v4","arch=x86-64-v3","default")))
void drop(const float* in, float* o, int64_t i0, int64_t i1, uint64_t seed, float p, float scale) {
  for (int64_t i = i0; i < i1; ++i) o[i] = in[i] * (hash_keep(seed, uint64_t(i), p) ? scale : 0.f);
}
void drop_plain(const float* in, float* o, int64_t i0, int64_t i1, uint64_t seed, float p, float scale) {
  for (int64_t i = i0; i < i1; ++i) o[i] = in[i] * (hash_keep(seed, uint64_t(i), p) ? scale : 0.f);
}
int main() {
  int64_t n = 2708 * 1433; std::vector<float> a(n, 1.f), b(n);
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now(); drop(a.data(), b.data(), 0, n, 7, 0.2f, 1.25f);
    auto t1 = std::chrono::steady_clock::now(); drop_plain(a.data(), b.data(), 0, n, 7, 0.2f, 1.25f);
    auto t2 = std::chrono::steady_clock::now();
    printf("clones %.2f ms plain %.2f ms\n", std::chrono::duration<double,std::milli>(t1-t0).count(), std::chrono::duration<double,std::milli>(t2-t1).count());
  }
  double s=0; for (auto v: b) s+=v; printf("%f\n", s/n);
}
