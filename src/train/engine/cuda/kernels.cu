/* fc7's own CUDA kernels; compiled at run time by NVRTC (see kernels.rs). Host emulations of
   each kernel, checked against the CPU engine, are in emulate.rs. */

typedef unsigned long long u64;
typedef unsigned int u32;

#define GRID_STRIDE(i, len) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (len); \
         i += (long long)blockDim.x * gridDim.x)

/* (px / 255 + shift[c] - mean[c]) / std[c] with colour = {shift[3], mean[3], std[3]}, one
   image's table row (engine/normalise.rs), rounded at every step as the CPU engine does */
__device__ float normalised(unsigned char px, const float* colour, int c) {
    float v = (float)px / 255.0f;
    return __fdiv_rn(__fsub_rn(__fadd_rn(v, colour[c]), colour[3 + c]), colour[6 + c]);
}

/* x[n][c][p] = normalised(px[n][c][p]) */
extern "C" __global__ void input_u8(const unsigned char* px, const float* colours, float* x,
                                    long long len, int plane) {
    GRID_STRIDE(i, len) {
        long long nc = i / plane;
        x[i] = normalised(px[i], colours + 9 * (nc / 3), (int)(nc % 3));
    }
}

/* x[n][c][y][x] from whole images img[n][side][side][3] (the pack's rows) and one view each,
   view[n] = {left, top, flip}: the pixel augment::write_crop would copy, then normalised(). */
extern "C" __global__ void input_crop(const unsigned char* img, const int* view,
                                      const float* colours, float* x, long long len, int side,
                                      int crop) {
    long long plane = (long long)crop * crop;
    GRID_STRIDE(i, len) {
        long long nc = i / plane;
        long long n = nc / 3;
        int c = (int)(nc % 3);
        int p = (int)(i % plane);
        int yy = p / crop, xx = p % crop;
        const int* v = view + 3 * n;
        int sx = v[0] + (v[2] ? crop - 1 - xx : xx);
        int sy = v[1] + yy;
        unsigned char px = img[((n * side + sy) * side + sx) * 3 + c];
        x[i] = normalised(px, colours + 9 * n, c);
    }
}

__device__ u32 dropout_hash(u64 seed, u64 i) {
    u64 z = seed + (i + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (u32)((z ^ (z >> 31)) >> 40);
}

extern "C" __global__ void dropout(float* h, long long len, u64 seed, u32 threshold, float scale) {
    GRID_STRIDE(i, len) {
        h[i] = dropout_hash(seed, (u64)i) >= threshold ? h[i] * scale : 0.0f;
    }
}

/* One thread per sample: loss[i] = logsumexp(row) - row[label]; grad = (softmax - onehot) / n */
extern "C" __global__ void softmax_xent(const float* logits, const u32* labels, float* loss,
                                        float* grad, int n, int k) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float* row = logits + (long long)i * k;
    float mx = row[0];
    for (int j = 1; j < k; j++) mx = fmaxf(mx, row[j]);
    double sum = 0.0;
    for (int j = 0; j < k; j++) sum += exp((double)(row[j] - mx));
    u32 label = labels[i];
    loss[i] = (float)(log(sum) - (double)(row[label] - mx));
    for (int j = 0; j < k; j++) {
        float p = (float)(exp((double)(row[j] - mx)) / sum);
        grad[(long long)i * k + j] = (p - (j == (int)label ? 1.0f : 0.0f)) / (float)n;
    }
}

/* y[r][j] += b[j] */
extern "C" __global__ void add_bias_rows(float* y, const float* b, long long len, int o) {
    GRID_STRIDE(i, len) { y[i] += b[i % o]; }
}

/* db[j] = sum over rows of dy[r][j], in row order */
extern "C" __global__ void sum_rows(const float* dy, float* db, int n, int o) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= o) return;
    double s = 0.0;
    for (int r = 0; r < n; r++) s += dy[(long long)r * o + j];
    db[j] = (float)s;
}

/* x <- a x */
extern "C" __global__ void scale(float* x, long long len, float a) {
    GRID_STRIDE(i, len) { x[i] *= a; }
}

/* v <- m v - wd lr w - lr g; w <- w + v */
extern "C" __global__ void sgd(float* w, float* v, const float* g, long long len, float lr,
                               float m, float wd) {
    GRID_STRIDE(i, len) {
        float nv = m * v[i] - wd * lr * w[i] - lr * g[i];
        v[i] = nv;
        w[i] += nv;
    }
}

/* bf16 is the top half of an f32: rounded to nearest, ties to even; NaN stays a (quiet) NaN */
__device__ unsigned short bf16_of(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (unsigned short)(b >> 16);
}

extern "C" __global__ void to_bf16(const float* x, unsigned short* y, long long len) {
    GRID_STRIDE(i, len) { y[i] = bf16_of(x[i]); }
}

extern "C" __global__ void from_bf16(const unsigned short* x, float* y, long long len) {
    GRID_STRIDE(i, len) { y[i] = __uint_as_float((u32)x[i] << 16); }
}
