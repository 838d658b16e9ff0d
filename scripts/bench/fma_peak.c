/* One core's fused multiply-add peak, for "share of peak" figures: twelve independent chains
 * of 256-bit FMAs (AVX2; 512-bit ones give the same on a CPU that splits them, e.g. Zen 4),
 * enough to cover the latency of two FMA pipes. Built and run by scripts/bench/cpu-train.sh,
 * once per core at the same time. Usage: cc -O2 -mavx2 -mfma fma_peak.c && ./a.out */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12
int main(void) {
    __m256 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps(1e-3f * (i + 1));
    const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-6f);
    const long n = 100000000;
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    clock_gettime(CLOCK_MONOTONIC, &e);
    double t = (e.tv_sec - s.tv_sec) + (e.tv_nsec - s.tv_nsec) * 1e-9;
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += a[i][0];
    printf("fma-peak GFLOP/s=%.1f (one core; checksum %.4f)\n", n * CHAINS * 16.0 / t / 1e9, sum);
    return 0;
}
