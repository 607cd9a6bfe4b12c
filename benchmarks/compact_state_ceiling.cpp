// What a hand-written AVX2 kernel could gain from bfloat16 Adam state on this CPU: the ceiling
// for issue 8's speed target (bfloat16 state >= 1.2x the float32-state step), not adamkit's
// code (adamkit compiles its rules' update with inductor). One Adam step over 20 M float32
// params with float32 moments, then with bfloat16 moments rounded half up, then rounded
// stochastically with adamkit's hash (adamkit.precision._mix of the kept half ^ a key). Each is
// timed over the whole buffers (memory and compute) and over a 64 k slice stepped 305 times
// (in cache: compute alone), best of 10; ratios are float32-state time over the kernel's.
//
//   g++ -O3 -mavx2 -mfma -fopenmp benchmarks/compact_state_ceiling.cpp -o /tmp/ceiling
//   OMP_NUM_THREADS=2 /tmp/ceiling
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

static __m256i mix(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x1B873593));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

static __m256 widen(const uint16_t* half) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(half));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static void narrow(uint16_t* half, __m256 value, __m256i key, bool stochastic) {
  __m256i bits = _mm256_castps_si256(value);
  __m256i noise = stochastic ? _mm256_and_si256(mix(_mm256_xor_si256(_mm256_srli_epi32(bits, 16), key)),
                                                _mm256_set1_epi32(0xFFFF))
                             : _mm256_set1_epi32(0x8000);
  __m256i kept = _mm256_srli_epi32(_mm256_add_epi32(bits, noise), 16);
  __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(kept, kept), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(half), _mm256_castsi256_si128(packed));
}

int main() {
  const long n = 20000000, slice = 65536;
  std::vector<float> p(n, 0.1f), g(n), m(n, 0.f), v(n, 0.f);
  std::vector<uint16_t> m16(n, 0), v16(n, 0);
  for (long i = 0; i < n; i++) g[i] = std::sin(i * 0.001f);
  const __m256 one_minus_b1 = _mm256_set1_ps(0.1f), b2 = _mm256_set1_ps(0.999f),
               one_minus_b2 = _mm256_set1_ps(0.001f), minus_lr = _mm256_set1_ps(-1e-3f),
               eps = _mm256_set1_ps(1e-8f), correction = _mm256_set1_ps(0.5f);
  const char* names[] = {"float32 state", "bfloat16 state, rounded half up", "bfloat16 state, stochastic"};
  for (long size : {n, slice}) {
    printf(size == n ? "20 M params, memory and compute:\n" : "64 k params x 305, in cache (compute):\n");
    double first = 0;
    for (int kind = 0; kind < 3; kind++) {
      double best = 1e9;
      for (int run = 0; run < 12; run++) {
        auto start = std::chrono::steady_clock::now();
        __m256i key_m = _mm256_set1_epi32(run * 0x9E3779B9u), key_v = _mm256_set1_epi32(run * 0x9E3779B9u ^ 0x55);
        for (long repeat = 0; repeat < n / size; repeat++) {
#pragma omp parallel for schedule(static)
          for (long i = 0; i < size; i += 8) {
            __m256 grad = _mm256_loadu_ps(&g[i]);
            __m256 m0 = kind ? widen(&m16[i]) : _mm256_loadu_ps(&m[i]);
            __m256 v0 = kind ? widen(&v16[i]) : _mm256_loadu_ps(&v[i]);
            __m256 m1 = _mm256_fmadd_ps(_mm256_sub_ps(grad, m0), one_minus_b1, m0);
            __m256 v1 = _mm256_fmadd_ps(_mm256_mul_ps(grad, grad), one_minus_b2, _mm256_mul_ps(v0, b2));
            __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v1), correction), eps);
            _mm256_storeu_ps(&p[i], _mm256_fmadd_ps(_mm256_div_ps(m1, denom), minus_lr, _mm256_loadu_ps(&p[i])));
            if (kind) {
              narrow(&m16[i], m1, key_m, kind == 2);
              narrow(&v16[i], v1, key_v, kind == 2);
            } else {
              _mm256_storeu_ps(&m[i], m1);
              _mm256_storeu_ps(&v[i], v1);
            }
          }
        }
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (run > 1 && seconds < best) best = seconds;
      }
      if (!kind) first = best;
      printf("  %-34s %6.2f ms  %.2fx\n", names[kind], best * 1e3, first / best);
    }
  }
  printf("(checksum %g)\n", p[123] + m16[77]);
}
