// What AMSGrad's step can reach on this machine's memory: the ceiling for issue 16's roofline
// target (AMSGrad >= 0.95 of its roofline), not adamkit's code (adamkit compiles its rules'
// update with inductor). benchmarks/step.py's roofline is the bytes a step must move (36 per
// param for AMSGrad: it reads param, gradient and three state tensors and writes four) over the
// bandwidth of a <- a + b (12 bytes per element, two streams read, one written). This times,
// over 20 M float32 elements and the same threads:
//   stream   a <- a + b, as benchmarks/step.py measures it (12 bytes per element);
//   AdamW    AdamW's update in a plain loop the compiler vectorises (28 bytes);
//   AMSGrad  AMSGrad's update (torch's raw maximum) in such a loop (36 bytes);
//   copy9    the loads and stores of AMSGrad and no arithmetic: each of four arrays
//            <- itself + one more array, over the same nine streams (36 bytes).
// Each is the best of 20 runs; GB/s counts the bytes each must move. What the AMSGrad loop
// reaches, as a share of the stream's GB/s, is what a step can reach of the roofline here (on
// the 2-core AMD EPYC of 2026-12-04: 1.16-1.37, the stream 42-47 GB/s; copy9 0.96-1.80).
//
//   g++ -O3 -march=native -fno-math-errno -fopenmp benchmarks/amsgrad_ceiling.cpp -o /tmp/amsgrad_ceiling
//   OMP_NUM_THREADS=2 /tmp/amsgrad_ceiling
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

static double best_seconds(const std::function<void()>& run) {
  run();  // pages touched, caches warm
  double best = 1e30;
  for (int repeat = 0; repeat < 20; repeat++) {
    auto start = std::chrono::steady_clock::now();
    run();
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

int main() {
  const long n = 20000000;
  std::vector<float> p(n, 0.1f), g(n), m(n, 0.f), v(n, 0.f), vmax(n, 0.f);
  for (long i = 0; i < n; i++) g[i] = std::sin(i * 0.001f);
  float* P = p.data();
  float* G = g.data();
  float* M = m.data();
  float* V = v.data();
  float* X = vmax.data();
  const float b1 = 0.9f, b2 = 0.999f, lr = 1e-3f, eps = 1e-8f, decay = 1.f - 1e-5f;
  const float step_size = lr / 0.1f, correction2_sqrt = std::sqrt(0.001f);

  double stream = best_seconds([&] {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) P[i] += G[i];
  });
  double adamw = best_seconds([&] {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
      float param = P[i] * decay, grad = G[i];
      float first = M[i] + (grad - M[i]) * (1.f - b1);
      float second = V[i] * b2 + grad * grad * (1.f - b2);
      M[i] = first;
      V[i] = second;
      P[i] = param - step_size * first / (std::sqrt(second) / correction2_sqrt + eps);
    }
  });
  double amsgrad = best_seconds([&] {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
      float grad = G[i];
      float first = M[i] + (grad - M[i]) * (1.f - b1);
      float second = V[i] * b2 + grad * grad * (1.f - b2);
      float most = X[i] < second ? second : X[i];  // torch.maximum's order; vectorises
      M[i] = first;
      V[i] = second;
      X[i] = most;
      P[i] = P[i] - step_size * first / (std::sqrt(most) / correction2_sqrt + eps);
    }
  });
  double copy9 = best_seconds([&] {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
      float grad = G[i];
      P[i] += grad;
      M[i] += grad;
      V[i] += grad;
      X[i] += grad;
    }
  });
  const double gb = n / 1e9;
  const double stream_rate = 12 * gb / stream;
  std::printf("%d threads, %ld float32 elements\n", omp_get_max_threads(), n);
  std::printf("%-8s %8s %8s %10s\n", "loop", "ms", "GB/s", "of stream");
  const struct {
    const char* name;
    double seconds, bytes;
  } rows[] = {{"stream", stream, 12}, {"AdamW", adamw, 28}, {"AMSGrad", amsgrad, 36},
              {"copy9", copy9, 36}};
  for (const auto& row : rows) {
    const double rate = row.bytes * gb / row.seconds;
    std::printf("%-8s %8.2f %8.1f %10.2f\n", row.name, row.seconds * 1e3, rate, rate / stream_rate);
  }
  return 0;
}
