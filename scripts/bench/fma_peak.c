/* One core's fused multiply-add peak, for "share of peak" figures: twelve independent chains
 * of FMAs, enough to cover the latency of two FMA pipes. Built with -mavx2 -mfma it measures
 * 256-bit FMAs (AVX2); with -mavx512f, 512-bit ones — the same on a CPU that splits them
 * (Zen 4), twice as many on one that does not (Zen 5). Built and run by
 * scripts/bench/cpu-train.sh, once per core at the same time.
 * Usage: cc -O2 -mavx2 -mfma fma_peak.c && ./a.out   (or cc -O2 -mavx512f ...) */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#ifdef __AVX512F__
typedef __m512 vec;
#define SET _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define LANES 16
#define NAME "fma-peak-512"
#else
typedef __m256 vec;
#define SET _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define LANES 8
#define NAME "fma-peak"
#endif

#define CHAINS 12
int main(void) {
    vec a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = SET(1e-3f * (i + 1));
    const vec b = SET(0.9999f), c = SET(1e-6f);
    const long n = 100000000;
    struct timespec s, e;
    clock_gettime(CLOCK_MONOTONIC, &s);
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) a[i] = FMA(a[i], b, c);
    }
    clock_gettime(CLOCK_MONOTONIC, &e);
    double t = (e.tv_sec - s.tv_sec) + (e.tv_nsec - s.tv_nsec) * 1e-9;
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += a[i][0];
    printf(NAME " GFLOP/s=%.1f (one core; checksum %.4f)\n", n * CHAINS * 2.0 * LANES / t / 1e9,
           sum);
    return 0;
}
