// dmol WaveNet step kernel: T steps of B streams on nt CPU threads (see incremental.py).
// Every weight matrix is stored as panels of 32 columns, each a contiguous (K, 32) block:
// a product streams the panel once while its 32 sums stay in registers. Weights are float32,
// bfloat16 (widened, or bfloat16 products on AVX512-BF16) or int8 (integer products).
#include <algorithm>
#include <atomic>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
extern "C" __m512 _ZGVeN16v_expf(__m512);  // glibc libmvec, 16 lanes
#define DMOL_VEXP 1
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define DMOL_AVX2 1  // 16 registers of 8 floats: tiles of at most 3 rows, sums in registers
#endif

constexpr int64_t PW = 32;  // panel width (columns)
constexpr int64_t PF = 2048;  // bytes of weights prefetched ahead (int8 tiles)

// rows split into tiles of at most 8 rows, as even as possible (5 rows: one tile of 5, not
// 4 + 1: a 1-row tile has too few sums to hide the FMA latency and costs a 4-row tile);
// f(std::integral_constant<int, MR>, first row) runs one tile
template <typename F>
static inline void even_tiles(int64_t rows, F&& f) {
    const int64_t n_tiles = (rows + 7) / 8;
    for (int64_t q = 0; q < n_tiles; ++q) {
        const int64_t m0 = rows * q / n_tiles;
        switch (rows * (q + 1) / n_tiles - m0) {
            case 8: f(std::integral_constant<int, 8>{}, m0); break;
            case 7: f(std::integral_constant<int, 7>{}, m0); break;
            case 6: f(std::integral_constant<int, 6>{}, m0); break;
            case 5: f(std::integral_constant<int, 5>{}, m0); break;
            case 4: f(std::integral_constant<int, 4>{}, m0); break;
            case 3: f(std::integral_constant<int, 3>{}, m0); break;
            case 2: f(std::integral_constant<int, 2>{}, m0); break;
            case 1: f(std::integral_constant<int, 1>{}, m0); break;
            default: break;
        }
    }
}

#ifdef DMOL_AVX2
static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const uint16_t* p) {  // bfloat16: widen by a 16-bit shift
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

// Y[m, 0:32] += X[m, 0:K] @ P (K, 32) for m < MR (<= 3): 4 MR sums of 8 columns, each summed
// over k in order with one FMA per k (the same numbers as the portable loop); named variables,
// not arrays, so that the sums stay in registers
template <int MR, typename W>
static inline void tile_avx2(const float* X, int64_t ldx, const W* p, int64_t K, float* Y,
                             int64_t ldy) {
    static_assert(MR >= 1 && MR <= 3, "AVX2 tiles have at most 3 rows");
    const float *x0 = X, *x1 = X + (MR > 1 ? ldx : 0), *x2 = X + (MR > 2 ? 2 * ldx : 0);
    float *y0 = Y, *y1 = Y + (MR > 1 ? ldy : 0), *y2 = Y + (MR > 2 ? 2 * ldy : 0);
    __m256 a0 = _mm256_loadu_ps(y0), a1 = _mm256_loadu_ps(y0 + 8);
    __m256 a2 = _mm256_loadu_ps(y0 + 16), a3 = _mm256_loadu_ps(y0 + 24);
    __m256 b0, b1, b2, b3, c0, c1, c2, c3;
    if (MR > 1) {
        b0 = _mm256_loadu_ps(y1), b1 = _mm256_loadu_ps(y1 + 8);
        b2 = _mm256_loadu_ps(y1 + 16), b3 = _mm256_loadu_ps(y1 + 24);
    }
    if (MR > 2) {
        c0 = _mm256_loadu_ps(y2), c1 = _mm256_loadu_ps(y2 + 8);
        c2 = _mm256_loadu_ps(y2 + 16), c3 = _mm256_loadu_ps(y2 + 24);
    }
    for (int64_t k = 0; k < K; ++k, p += PW) {
        const __m256 w0 = load8(p), w1 = load8(p + 8), w2 = load8(p + 16), w3 = load8(p + 24);
        __m256 x = _mm256_broadcast_ss(x0 + k);
        a0 = _mm256_fmadd_ps(x, w0, a0), a1 = _mm256_fmadd_ps(x, w1, a1);
        a2 = _mm256_fmadd_ps(x, w2, a2), a3 = _mm256_fmadd_ps(x, w3, a3);
        if (MR > 1) {
            x = _mm256_broadcast_ss(x1 + k);
            b0 = _mm256_fmadd_ps(x, w0, b0), b1 = _mm256_fmadd_ps(x, w1, b1);
            b2 = _mm256_fmadd_ps(x, w2, b2), b3 = _mm256_fmadd_ps(x, w3, b3);
        }
        if (MR > 2) {
            x = _mm256_broadcast_ss(x2 + k);
            c0 = _mm256_fmadd_ps(x, w0, c0), c1 = _mm256_fmadd_ps(x, w1, c1);
            c2 = _mm256_fmadd_ps(x, w2, c2), c3 = _mm256_fmadd_ps(x, w3, c3);
        }
    }
    _mm256_storeu_ps(y0, a0), _mm256_storeu_ps(y0 + 8, a1);
    _mm256_storeu_ps(y0 + 16, a2), _mm256_storeu_ps(y0 + 24, a3);
    if (MR > 1) {
        _mm256_storeu_ps(y1, b0), _mm256_storeu_ps(y1 + 8, b1);
        _mm256_storeu_ps(y1 + 16, b2), _mm256_storeu_ps(y1 + 24, b3);
    }
    if (MR > 2) {
        _mm256_storeu_ps(y2, c0), _mm256_storeu_ps(y2 + 8, c1);
        _mm256_storeu_ps(y2 + 16, c2), _mm256_storeu_ps(y2 + 24, c3);
    }
}

// one row against two panels at once: 8 independent sums per k hide the FMA latency that
// bounds a single panel's 4 (same order of every sum, so the same numbers)
template <typename W>
static inline void tile_1x2(const float* X, const W* p, const W* q, int64_t K, float* Y,
                            float* Z) {
    __m256 a0 = _mm256_loadu_ps(Y), a1 = _mm256_loadu_ps(Y + 8);
    __m256 a2 = _mm256_loadu_ps(Y + 16), a3 = _mm256_loadu_ps(Y + 24);
    __m256 b0 = _mm256_loadu_ps(Z), b1 = _mm256_loadu_ps(Z + 8);
    __m256 b2 = _mm256_loadu_ps(Z + 16), b3 = _mm256_loadu_ps(Z + 24);
    for (int64_t k = 0; k < K; ++k, p += PW, q += PW) {
        const __m256 x = _mm256_broadcast_ss(X + k);
        a0 = _mm256_fmadd_ps(x, load8(p), a0), a1 = _mm256_fmadd_ps(x, load8(p + 8), a1);
        a2 = _mm256_fmadd_ps(x, load8(p + 16), a2), a3 = _mm256_fmadd_ps(x, load8(p + 24), a3);
        b0 = _mm256_fmadd_ps(x, load8(q), b0), b1 = _mm256_fmadd_ps(x, load8(q + 8), b1);
        b2 = _mm256_fmadd_ps(x, load8(q + 16), b2), b3 = _mm256_fmadd_ps(x, load8(q + 24), b3);
    }
    _mm256_storeu_ps(Y, a0), _mm256_storeu_ps(Y + 8, a1);
    _mm256_storeu_ps(Y + 16, a2), _mm256_storeu_ps(Y + 24, a3);
    _mm256_storeu_ps(Z, b0), _mm256_storeu_ps(Z + 8, b1);
    _mm256_storeu_ps(Z + 16, b2), _mm256_storeu_ps(Z + 24, b3);
}
#endif

// Sizes are padded: R, S, C to multiples of 32, H to a multiple of 16, G = 2 H. Gate columns
// are interleaved per panel: 16 of the tanh half, then the 16 matching sigmoid columns.
// C is the network's output (padded), C_out the channels of params: the network's, plus the
// prediction p_t of an LP model (order > 0). An LP model keeps the last HN >= order samples;
// with K = ptaps > 0 pitch taps its input also holds x[t - lag_t + j], |j| <= K / 2, and with
// pexc their excitation under step t's coefficients (HN covers the order samples before them)
struct Net {
    int64_t L, R, G, H, S, C, M, k, P, bf16, C_out, cin, order;  // bf16: 0 no, 1 weights, 2 dp,
                                             // 3 int8 (Q8 descriptors; the output products f32)
    int64_t ptaps, HN, pexc;
    const int64_t* dil;
    const int64_t* blocked;
    const float* w_first;        // (R,), LP (3 + K (2 K), R): x[t-1], p_t, x[t-1] - p[t-1],
                                 // taps (then their excitation)
    const void* const* w_main;   // per layer: (k R, G), or blocked (R, G)
    const void* const* w_past;   // per layer: k - 1 panel sets (R, G) float32 (int8: k - 1
                                 // Q8), or null
    const void* const* w_out;    // per layer but the last: (H, R)
    const void* w_skip;          // (L H, S)
    const float* b_skip;
    const void* w_post1;         // (S, S), float32 in an int8 model, as w_post2
    const float* b_post1;
    const void* w_post2;         // (S, C)
    const float* b_post2;
    const void* w_cond;          // (cin, L G): every layer's conditioning projection
    float log_scale_min;
};

// Y[m, 0:32] += X[m, 0:K] @ P (K, 32) for m < MR
template <int MR>
static inline void tile(const float* X, int64_t ldx, const float* p, int64_t K, float* Y,
                        int64_t ldy) {
#if defined(__AVX512F__)
    __m512 a[MR][2];
    for (int r = 0; r < MR; ++r)
        a[r][0] = _mm512_loadu_ps(Y + r * ldy), a[r][1] = _mm512_loadu_ps(Y + r * ldy + 16);
    for (int64_t k = 0; k < K; ++k, p += PW) {
        const __m512 w0 = _mm512_loadu_ps(p), w1 = _mm512_loadu_ps(p + 16);
        for (int r = 0; r < MR; ++r) {
            const __m512 x = _mm512_set1_ps(X[r * ldx + k]);
            a[r][0] = _mm512_fmadd_ps(x, w0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(x, w1, a[r][1]);
        }
    }
    for (int r = 0; r < MR; ++r)
        _mm512_storeu_ps(Y + r * ldy, a[r][0]), _mm512_storeu_ps(Y + r * ldy + 16, a[r][1]);
#elif defined(DMOL_AVX2)
    tile_avx2<MR>(X, ldx, p, K, Y, ldy);
#else
    float a[MR][PW];
    for (int r = 0; r < MR; ++r) std::memcpy(a[r], Y + r * ldy, sizeof a[r]);
    for (int64_t k = 0; k < K; ++k, p += PW)
        for (int r = 0; r < MR; ++r)
            for (int c = 0; c < PW; ++c) a[r][c] += X[r * ldx + k] * p[c];
    for (int r = 0; r < MR; ++r) std::memcpy(Y + r * ldy, a[r], sizeof a[r]);
#endif
}

// the same with bfloat16 weights (the top half of a float32: widen by a 16-bit shift)
template <int MR>
static inline void tile(const float* X, int64_t ldx, const uint16_t* p, int64_t K, float* Y,
                        int64_t ldy) {
#if defined(__AVX512F__)
    __m512 a[MR][2];
    for (int r = 0; r < MR; ++r)
        a[r][0] = _mm512_loadu_ps(Y + r * ldy), a[r][1] = _mm512_loadu_ps(Y + r * ldy + 16);
    for (int64_t k = 0; k < K; ++k, p += PW) {
        const __m512i v = _mm512_loadu_si512(static_cast<const void*>(p));
        const __m512 w0 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)), 16));
        const __m512 w1 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1)), 16));
        for (int r = 0; r < MR; ++r) {
            const __m512 x = _mm512_set1_ps(X[r * ldx + k]);
            a[r][0] = _mm512_fmadd_ps(x, w0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(x, w1, a[r][1]);
        }
    }
    for (int r = 0; r < MR; ++r)
        _mm512_storeu_ps(Y + r * ldy, a[r][0]), _mm512_storeu_ps(Y + r * ldy + 16, a[r][1]);
#elif defined(DMOL_AVX2)
    tile_avx2<MR>(X, ldx, p, K, Y, ldy);
#else
    float a[MR][PW];
    for (int r = 0; r < MR; ++r) std::memcpy(a[r], Y + r * ldy, sizeof a[r]);
    for (int64_t k = 0; k < K; ++k, p += PW)
        for (int r = 0; r < MR; ++r)
            for (int c = 0; c < PW; ++c) {
                uint32_t b = uint32_t(p[c]) << 16;
                float w;
                std::memcpy(&w, &b, 4);
                a[r][c] += X[r * ldx + k] * w;
            }
    for (int r = 0; r < MR; ++r) std::memcpy(Y + r * ldy, a[r], sizeof a[r]);
#endif
}

#if defined(__AVX512F__)
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {  // bfloat16: widen by a 16-bit shift
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// one row against 4 panels (stride apart): 8 independent sums per k hide the FMA latency that
// bounds one panel's 2 (every sum in tile<1>'s order: the same numbers)
template <typename W>
static inline void row_x4(const float* X, const W* p, int64_t stride, int64_t K, float* Y) {
    __m512 a[4][2];
    for (int q = 0; q < 4; ++q)
        a[q][0] = _mm512_loadu_ps(Y + q * PW), a[q][1] = _mm512_loadu_ps(Y + q * PW + 16);
    for (int64_t k = 0; k < K; ++k, p += PW) {
        const __m512 x = _mm512_set1_ps(X[k]);
        for (int q = 0; q < 4; ++q) {
            a[q][0] = _mm512_fmadd_ps(x, load16(p + q * stride), a[q][0]);
            a[q][1] = _mm512_fmadd_ps(x, load16(p + q * stride + 16), a[q][1]);
        }
    }
    for (int q = 0; q < 4; ++q)
        _mm512_storeu_ps(Y + q * PW, a[q][0]), _mm512_storeu_ps(Y + q * PW + 16, a[q][1]);
}
#endif

// Y[m, 32 p0 : 32 p1] += X[m, 0:K] @ W[:K, 32 p0 : 32 p1] for m < rows; W is stored as panels
// of Kp rows (use the first K, from row k0 on)
template <typename W>
static void gemm(const float* X, int64_t ldx, int64_t rows, const W* w, int64_t Kp, int64_t k0,
                 int64_t K, int64_t p0, int64_t p1, float* Y, int64_t ldy) {
#if defined(__AVX512F__)
    if (rows == 1) {
        int64_t p = p0;
        for (; p + 4 <= p1; p += 4) row_x4(X, w + (p * Kp + k0) * PW, Kp * PW, K, Y + p * PW);
        for (; p < p1; ++p) tile<1>(X, ldx, w + (p * Kp + k0) * PW, K, Y + p * PW, ldy);
        return;
    }
#elif defined(DMOL_AVX2)
    if (rows == 1) {
        int64_t p = p0;
        for (; p + 2 <= p1; p += 2)
            tile_1x2(X, w + (p * Kp + k0) * PW, w + ((p + 1) * Kp + k0) * PW, K, Y + p * PW,
                     Y + (p + 1) * PW);
        if (p < p1) tile<1>(X, ldx, w + (p * Kp + k0) * PW, K, Y + p * PW, ldy);
        return;
    }
#endif
    for (int64_t p = p0; p < p1; ++p) {
        const W* pan = w + (p * Kp + k0) * PW;
        float* y = Y + p * PW;
#ifdef DMOL_AVX2
        int64_t m = 0;
        for (; m + 3 <= rows; m += 3) tile<3>(X + m * ldx, ldx, pan, K, y + m * ldy, ldy);
        switch (rows - m) {
            case 2: tile<2>(X + m * ldx, ldx, pan, K, y + m * ldy, ldy); break;
            case 1: tile<1>(X + m * ldx, ldx, pan, K, y + m * ldy, ldy); break;
            default: break;
        }
#else
        even_tiles(rows, [&](auto mr, int64_t m0) {
            tile<decltype(mr)::value>(X + m0 * ldx, ldx, pan, K, y + m0 * ldy, ldy);
        });
#endif
    }
}

// bfloat16 products (CPUs with AVX512-BF16): each panel holds pairs of rows, (K/2, 32) 32-bit
// words of two bfloat16 weights; the activations are rounded to bfloat16 too, and one
// vdpbf16ps adds two products per lane into float32 sums: twice the arithmetic of float32
struct Bf16Pair {
    uint32_t v;
};
#if defined(__AVX512BF16__)
#define DMOL_DP 1
template <int MR>
static inline void tile_dp(const uint32_t* X, int64_t ldx, const uint32_t* p, int64_t K2,
                           float* Y, int64_t ldy) {
    __m512 a[MR][2];
    for (int r = 0; r < MR; ++r)
        a[r][0] = _mm512_loadu_ps(Y + r * ldy), a[r][1] = _mm512_loadu_ps(Y + r * ldy + 16);
    for (int64_t k = 0; k < K2; ++k, p += PW) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(static_cast<const void*>(p));
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(static_cast<const void*>(p + 16));
        for (int r = 0; r < MR; ++r) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32(int(X[r * ldx + k]));
            a[r][0] = _mm512_dpbf16_ps(a[r][0], x, w0);
            a[r][1] = _mm512_dpbf16_ps(a[r][1], x, w1);
        }
    }
    for (int r = 0; r < MR; ++r)
        _mm512_storeu_ps(Y + r * ldy, a[r][0]), _mm512_storeu_ps(Y + r * ldy + 16, a[r][1]);
}

static void gemm(const float* X, int64_t ldx, int64_t rows, const Bf16Pair* w, int64_t Kp,
                 int64_t k0, int64_t K, int64_t p0, int64_t p1, float* Y, int64_t ldy) {
    thread_local std::vector<uint32_t> xs;  // the rows of X as bfloat16 pairs
    const int64_t K2 = K / 2;
    xs.resize(rows * K2);
    for (int64_t m = 0; m < rows; ++m)
        for (int64_t q = 0; q < K; q += 16)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(xs.data() + m * K2 + q / 2),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(X + m * ldx + q)));
    const uint32_t* wv = reinterpret_cast<const uint32_t*>(w);
    for (int64_t p = p0; p < p1; ++p) {
        const uint32_t* pan = wv + (p * Kp + k0) / 2 * PW;
        float* y = Y + p * PW;
        int64_t m = 0;
        const uint32_t* x = xs.data();
        for (; m + 8 <= rows; m += 8) tile_dp<8>(x + m * K2, K2, pan, K2, y + m * ldy, ldy);
        for (; m + 4 <= rows; m += 4) tile_dp<4>(x + m * K2, K2, pan, K2, y + m * ldy, ldy);
        for (; m < rows; ++m) tile_dp<1>(x + m * K2, K2, pan, K2, y + m * ldy, ldy);
    }
}
#endif

// int8 weights: per column w = scale[c] q[k, c], q in [-127, 127], stored as panels of 4-row
// groups, (Kp/4, 32, 4) bytes. Each product rounds the rows of X to 8 bits too, one scale per
// row (x = sx (u - 128), u in [1, 255]), and sums the integer products exactly in int32:
// AVX512-VNNI's vpdpbusd adds 4 u8 x s8 products per lane, 4x the arithmetic of float32 and a
// quarter of its bytes. The offset 128 (vpdpbusd needs an unsigned side) is taken out with the
// columns' sums of q, kept as prefix sums every 16 rows so that any row range [k0, k0 + K)
// (the skip matrix is read one layer's rows at a time) costs two reads.
struct Q8 {
    const int8_t* q;
    const float* scale;  // (N,)
    const int32_t* pre;  // (Kp / 16 + 1, N): pre[i, c] = sum of q[k, c] over k < 16 i
    int64_t Kp, N;
};

// A[r, 0:32 NP] = X[r, 0:4 K4] @ the NP panels' 4 K4 rows (stride bytes apart), in int32
template <int MR, int NP>
static inline void tile_q8(const uint8_t* X, int64_t ldx, const int8_t* p, int64_t stride,
                           int64_t K4, int32_t* A) {
#if defined(__AVX512VNNI__)
    __m512i a[MR][2 * NP];
    for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 2 * NP; ++q) a[r][q] = _mm512_setzero_si512();
    // one k per iteration: GCC 12 unrolls this loop by 2 and then copies every accumulator
    // once per k (a register move per product), 1/3 slower
#pragma GCC unroll 1
    for (int64_t k = 0; k < K4; ++k, p += 4 * PW) {
        // a panel is one 4 KB page (128 rows), and the hardware prefetchers stop at pages:
        // ask for the bytes PF ahead (the next panel, while this one runs) ourselves
        for (int q = 0; q < NP; ++q) {
            _mm_prefetch(reinterpret_cast<const char*>(p + q * stride) + PF, _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(p + q * stride) + PF + 64, _MM_HINT_T0);
        }
        __m512i w[2 * NP];
        for (int q = 0; q < NP; ++q) {
            w[2 * q] = _mm512_loadu_si512(static_cast<const void*>(p + q * stride));
            w[2 * q + 1] = _mm512_loadu_si512(static_cast<const void*>(p + q * stride + 64));
        }
        for (int r = 0; r < MR; ++r) {
            int32_t four;
            std::memcpy(&four, X + r * ldx + 4 * k, 4);
            const __m512i x = _mm512_set1_epi32(four);
            for (int q = 0; q < 2 * NP; ++q) a[r][q] = _mm512_dpbusd_epi32(a[r][q], x, w[q]);
        }
    }
    for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 2 * NP; ++q)
            _mm512_storeu_si512(static_cast<void*>(A + r * NP * PW + q * 16), a[r][q]);
#else
    for (int r = 0; r < MR; ++r)
        for (int q = 0; q < NP; ++q)
            for (int c = 0; c < PW; ++c) {
                int32_t acc = 0;
                for (int64_t k = 0; k < K4; ++k)
                    for (int j = 0; j < 4; ++j)
                        acc += int32_t(X[r * ldx + 4 * k + j]) *
                               int32_t(p[q * stride + k * 4 * PW + c * 4 + j]);
                A[r * NP * PW + q * PW + c] = acc;
            }
#endif
}

#if defined(__AVX512VNNI__)
// the same for one panel (NP = 1) with every sum a named variable, updated in place by inline
// asm: with the intrinsic GCC 12 copies each sum to another register once per k (12 moves
// per 12 products for 6 rows), and an array of sums passed to asm stays in memory
#define DMOL_DPBUSD(acc, x, w) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w))
template <int MR>
static inline void tile_q8_named(const uint8_t* X, int64_t ldx, const int8_t* p, int64_t K4,
                                 int32_t* A) {
    static_assert(MR >= 1 && MR <= 8, "at most 8 rows");
    __m512i a0 = _mm512_setzero_si512(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0;
    __m512i a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0, a6 = a0, b6 = a0;
    __m512i a7 = a0, b7 = a0;
    for (int64_t k = 0; k < K4; ++k, p += 4 * PW) {
        _mm_prefetch(reinterpret_cast<const char*>(p) + PF, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(p) + PF + 64, _MM_HINT_T0);
        const __m512i w0 = _mm512_loadu_si512(static_cast<const void*>(p));
        const __m512i w1 = _mm512_loadu_si512(static_cast<const void*>(p + 64));
#define DMOL_ROW(r)                                           \
        if constexpr (MR > r) {                               \
            int32_t four;                                     \
            std::memcpy(&four, X + r * ldx + 4 * k, 4);       \
            const __m512i x = _mm512_set1_epi32(four);        \
            DMOL_DPBUSD(a##r, x, w0);                         \
            DMOL_DPBUSD(b##r, x, w1);                         \
        }
        DMOL_ROW(0) DMOL_ROW(1) DMOL_ROW(2) DMOL_ROW(3)
        DMOL_ROW(4) DMOL_ROW(5) DMOL_ROW(6) DMOL_ROW(7)
#undef DMOL_ROW
    }
    const __m512i sums[16] = {a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5, a6, b6, a7, b7};
    for (int r = 0; r < MR; ++r) {
        _mm512_storeu_si512(static_cast<void*>(A + r * PW), sums[2 * r]);
        _mm512_storeu_si512(static_cast<void*>(A + r * PW + 16), sums[2 * r + 1]);
    }
}
#endif

// rows of X to u8 with one scale per row: u = round(x / sx) + 128, sx = max |x| / 127
static void quantize_rows(const float* X, int64_t ldx, int64_t rows, int64_t K, uint8_t* U,
                          float* sx) {
    for (int64_t m = 0; m < rows; ++m) {
        const float* x = X + m * ldx;
        float top = 0.f;
        int64_t k = 0;
#if defined(__AVX512F__)
        __m512 t = _mm512_setzero_ps();
        for (; k + 16 <= K; k += 16) t = _mm512_max_ps(t, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
        top = _mm512_reduce_max_ps(t);  // a maximum is the same in any order
#endif
        for (; k < K; ++k) top = std::max(top, std::fabs(x[k]));
        sx[m] = top > 0.f ? top / 127.f : 1.f;
        const float inv = 1.f / sx[m];
        uint8_t* u = U + m * K;
        k = 0;
#if defined(__AVX512F__)
        for (; k + 16 <= K; k += 16) {  // cvtps rounds to nearest even, as nearbyint does
            const __m512i v = _mm512_add_epi32(
                _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_set1_ps(inv))),
                _mm512_set1_epi32(128));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(u + k), _mm512_cvtepi32_epi8(v));
        }
#endif
        for (; k < K; ++k) u[k] = uint8_t(int32_t(std::nearbyint(x[k] * inv)) + 128);
    }
}

template <int MR, int NP>
static inline void block_q8(const uint8_t* U, int64_t K, const float* sx, const Q8* w,
                            int64_t k0, int64_t p, float* Y, int64_t ldy) {
    int32_t A[MR * NP * PW];
    const int64_t stride = w->Kp * PW;
#if defined(__AVX512VNNI__)
    if constexpr (NP == 1)
        tile_q8_named<MR>(U, K, w->q + (p * w->Kp + k0) * PW, K / 4, A);
    else
#endif
        tile_q8<MR, NP>(U, K, w->q + (p * w->Kp + k0) * PW, stride, K / 4, A);
    const int32_t *lo = w->pre + k0 / 16 * w->N, *hi = w->pre + (k0 + K) / 16 * w->N;
    for (int r = 0; r < MR; ++r)
        for (int64_t c = 0; c < NP * PW; ++c) {
            const int64_t col = p * PW + c;
            const int32_t v = A[r * NP * PW + c] - 128 * (hi[col] - lo[col]);
            // an explicit fma: the same rounding in every tile shape and build (a compiler
            // would contract a * b + c in some loops and not in others)
            Y[r * ldy + col] = std::fma(float(v), sx[r] * w->scale[col], Y[r * ldy + col]);
        }
}

// X's rows rounded to 8 bits (this thread's buffer), then the product
struct QRows {
    std::vector<uint8_t> u;
    std::vector<float> sx;
    void set(const float* X, int64_t ldx, int64_t rows, int64_t K) {
        u.resize(rows * K), sx.resize(rows);
        quantize_rows(X, ldx, rows, K, u.data(), sx.data());
    }
};

static void gemm_q(const QRows& x, int64_t rows, const Q8* w, int64_t k0, int64_t K,
                   int64_t p0, int64_t p1, float* Y, int64_t ldy) {
    const uint8_t* U = x.u.data();
    const float* sx = x.sx.data();
    if (rows == 1) {  // one row: 4 panels at once, 8 independent sums
        int64_t p = p0;
        for (; p + 4 <= p1; p += 4) block_q8<1, 4>(U, K, sx, w, k0, p, Y, ldy);
        for (; p < p1; ++p) block_q8<1, 1>(U, K, sx, w, k0, p, Y, ldy);
        return;
    }
    for (int64_t p = p0; p < p1; ++p)
        even_tiles(rows, [&](auto mr, int64_t m0) {
            block_q8<decltype(mr)::value, 1>(U + m0 * K, K, sx + m0, w, k0, p, Y + m0 * ldy,
                                             ldy);
        });
}

static void gemm(const float* X, int64_t ldx, int64_t rows, const Q8* w, int64_t, int64_t k0,
                 int64_t K, int64_t p0, int64_t p1, float* Y, int64_t ldy) {
    thread_local QRows x;
    x.set(X, ldx, rows, K);
    gemm_q(x, rows, w, k0, K, p0, p1, Y, ldy);
}

// two products of the same rows (a layer's output and skip matrices): int8 rounds them once
template <typename W>
static void gemm2(const float* X, int64_t ldx, int64_t rows, const W* w1, int64_t K1p,
                  int64_t k1, int64_t p0, int64_t p1, float* Y1, int64_t ldy1, const W* w2,
                  int64_t K2p, int64_t k2, int64_t q0, int64_t q1, float* Y2, int64_t ldy2,
                  int64_t K) {
    if (w1) gemm(X, ldx, rows, w1, K1p, k1, K, p0, p1, Y1, ldy1);
    gemm(X, ldx, rows, w2, K2p, k2, K, q0, q1, Y2, ldy2);
}
static void gemm2(const float* X, int64_t ldx, int64_t rows, const Q8* w1, int64_t, int64_t k1,
                  int64_t p0, int64_t p1, float* Y1, int64_t ldy1, const Q8* w2, int64_t,
                  int64_t k2, int64_t q0, int64_t q1, float* Y2, int64_t ldy2, int64_t K) {
    thread_local QRows x;
    x.set(X, ldx, rows, K);
    if (w1) gemm_q(x, rows, w1, k1, K, p0, p1, Y1, ldy1);
    gemm_q(x, rows, w2, k2, K, q0, q1, Y2, ldy2);
}

extern "C" int dmol_has_bf16_products() {
#ifdef DMOL_DP
    return 1;
#else
    return 0;
#endif
}

// z = 1 / (1 + exp(-z)), vectorized where glibc has a vector exp
static void sigmoid_inplace(float* z, int64_t n) {
    int64_t i = 0;
#ifdef DMOL_VEXP
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_loadu_ps(z + i));
        _mm512_storeu_ps(z + i, _mm512_div_ps(one, _mm512_add_ps(one, _ZGVeN16v_expf(v))));
    }
#endif
    // the exponentials one by one, then the divisions as one vectorized loop (IEEE division:
    // the same numbers as dividing one at a time)
    for (int64_t q = i; q < n; ++q) z[q] = std::exp(-z[q]);
    for (int64_t q = i; q < n; ++q) z[q] = 1.0f / (1.0f + z[q]);
}

static inline int64_t mod(int64_t a, int64_t p) { return ((a % p) + p) % p; }

// all threads wait here until every one has arrived; spins briefly, then yields the core
// (on a busy machine a spinning thread would steal the time of the one it waits for)
struct Barrier {
    std::atomic<int64_t> count{0}, gen{0};
    int64_t n = 1;
    void wait() {
        if (n == 1) return;
        const int64_t g = gen.load(std::memory_order_acquire);
        if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
            count.store(0, std::memory_order_relaxed);
            gen.fetch_add(1, std::memory_order_release);
            return;
        }
        for (int spins = 0; gen.load(std::memory_order_acquire) == g; ++spins)
            if (spins > 4000) std::this_thread::yield();
    }
};

// thread tid's share [a, b) of n panels
static inline int64_t share_lo(int64_t n, int64_t tid, int64_t nt) { return n * tid / nt; }
static inline void share(int64_t n, int64_t tid, int64_t nt, int64_t& a, int64_t& b) {
    a = share_lo(n, tid, nt), b = share_lo(n, tid + 1, nt);
}

// steps whose conditioning is projected at once: about 64 rows, a product that keeps the
// register tiles full, and a result small enough to stay in cache until its steps read it
static inline int64_t base_steps(int64_t B) { return std::max<int64_t>(1, 64 / B); }

extern "C" int64_t dmol_base_floats(const Net* n, int64_t B) {
    return base_steps(B) * B * n->L * n->G;
}

struct Job {
    const Net* n;
    int64_t B, Bs, T, t0, nt;  // B rows of a batch whose rows are Bs apart in ring, base, noise
    float *ring, *x, *base;
    const float *cond, *bias, *gumbel, *logistic, *teacher;
    float *out, *params;
    float *hist, *pprev;  // LP: (B, HN) last samples in time order, (B,) previous p
    const float* lpc;     // LP: (B, T, order) per step, w[j] multiplies x[t - order + j]
    const int64_t* lags;  // pitch taps: (B, T) the pitch period of each step, in samples
    std::vector<float> h, taps, z, u, s, y1, y;
    Barrier bar;
};

// the past taps of blocked layers: float32 beside float32 and bfloat16 weights, int8 in an
// int8 model (read every d steps, they are much of a step's bytes)
template <typename W> struct Past {
    static const float* at(const void* p, int64_t tap, int64_t RG) {
        return static_cast<const float*>(p) + tap * RG;
    }
};
template <> struct Past<Q8> {
    static const Q8* at(const void* p, int64_t tap, int64_t) {
        return static_cast<const Q8*>(p) + tap;
    }
};

// With nt > 1 threads on one batch, each thread computes its own panels of every product (a
// gate panel holds matching tanh and sigmoid columns, so the gate needs no exchange) and a
// barrier follows every product whose full result the next one reads.
// W: the weights of the layers and the conditioning projection; E: those of the two output
// products (float32 in an int8 model: they set the distribution's parameters, and 8-bit
// products there cost the pretrained model 0.05 in MR-STFT and 5 Hz of F0 RMSE)
template <typename W, typename E = W>
static void work(Job& j, int64_t tid) {
    const Net& n = *j.n;
    const int64_t L = n.L, R = n.R, G = n.G, H = n.H, S = n.S, C = n.C, M = n.M, k = n.k;
    const int64_t P = n.P, LH = L * H, B = j.B, Bs = j.Bs, T = j.T;
    const float c = std::sqrt(0.5f);
    int64_t g0, g1, r0, r1, s0, s1;
    share(G / PW, tid, j.nt, g0, g1);
    share(R / PW, tid, j.nt, r0, r1);
    share(S / PW, tid, j.nt, s0, s1);
    float *h = j.h.data(), *taps = j.taps.data(), *z = j.z.data(), *u = j.u.data();
    float *s = j.s.data(), *y1 = j.y1.data(), *y = j.y.data();
    // LP: every thread keeps its own copy of the history (the samples are shared through
    // j.x) and computes the same predictions; row b of hb: samples t0 - HN .. t0 + T - 1
    const int64_t O = n.order, HN = n.HN, HL = HN + T, K = n.ptaps, half = K / 2;
    std::vector<float> hb(O ? B * HL : 0), pc(O ? B : 0), pp(O ? B : 0);
    for (int64_t b = 0; O && b < B; ++b) {
        std::memcpy(hb.data() + b * HL, j.hist + b * HN, sizeof(float) * HN);
        pp[b] = j.pprev[b];
    }
    auto ring_row = [&](int64_t i, int64_t slot) { return j.ring + ((i * P + slot) * Bs) * R; };
    // every layer's conditioning of CH steps at a time, biases included: base = bias + cond @
    // w_cond, projected just before those steps run, while their rows are still in cache
    const int64_t LG = L * G, cin = n.cin, CH = base_steps(Bs);
    const int64_t q0 = share_lo(LG / PW, tid, j.nt), q1 = share_lo(LG / PW, tid + 1, j.nt);
    const W* wc = static_cast<const W*>(n.w_cond);
    auto project = [&](int64_t r, int64_t m) {  // steps [r, r + m) into base rows [0, m)
        for (int64_t q = 0; q < m; ++q)
            for (int64_t b = 0; b < B; ++b)
                std::memcpy(j.base + (q * Bs + b) * LG + q0 * PW, j.bias + b * LG + q0 * PW,
                            sizeof(float) * (q1 - q0) * PW);
        if (B == Bs)
            gemm(j.cond + r * Bs * cin, cin, m * B, wc, cin, 0, cin, q0, q1, j.base, LG);
        else
            for (int64_t q = 0; q < m; ++q)
                gemm(j.cond + (r + q) * Bs * cin, cin, B, wc, cin, 0, cin, q0, q1,
                     j.base + q * Bs * LG, LG);
        j.bar.wait();
    };
    for (int64_t r = 0; r < T; ++r) {
        const int64_t t = j.t0 + r, slot = t % P, rc = r % CH;
        if (rc == 0) project(r, std::min(CH, T - r));
        float* bt = j.base + rc * Bs * LG;
        // past taps of blocked layers for the next steps up to a multiple of d (or chunk end)
        for (int64_t i = 0; i < L; ++i) {
            const int64_t d = n.dil[i];
            if (!n.blocked[i] || (t % d && rc)) continue;
            const int64_t m = std::min({d - t % d, T - r, CH - rc});
            for (int64_t tap = 0; tap < k - 1; ++tap) {
                const auto* w = Past<W>::at(n.w_past[i], tap, R * G);
                const int64_t from = mod(t - (k - 1 - tap) * d, P);
                if (B == Bs)  // the m steps' rows are contiguous: one product
                    gemm(ring_row(i, from), R, m * B, w, R, 0, R, g0, g1, bt + i * G, L * G);
                else
                    for (int64_t q = 0; q < m; ++q)
                        gemm(ring_row(i, from + q), R, B, w, R, 0, R, g0, g1,
                             bt + q * Bs * L * G + i * G, L * G);
            }
        }
        if (O) {  // p_t from the last O samples; input [x[t-1], p_t, x[t-1] - p[t-1], taps]
            for (int64_t b = 0; b < B; ++b) {
                float* hr = hb.data() + b * HL;
                if (r) hr[HN + r - 1] = j.x[b];
                const float* w = j.lpc + (b * T + r) * O;
                float p = 0.f;
                for (int64_t q = 0; q < O; ++q) p += w[q] * hr[HN - O + r + q];
                const float xp = j.x[b], e = xp - pp[b];
                pc[b] = p, pp[b] = p;
                const float *w0 = n.w_first, *w1 = w0 + R, *w2 = w1 + R;
                for (int64_t q = r0 * PW; q < r1 * PW; ++q)
                    h[b * R + q] = xp * w0[q] + p * w1[q] + e * w2[q];
                if (K) {  // x[t - lag + i - half]: index HN + r stands for step t
                    const float* xl = hr + HN + r - j.lags[b * T + r] - half;
                    for (int64_t i = 0; i < K; ++i) {
                        const float v = xl[i], *wi = w2 + (1 + i) * R;
                        for (int64_t q = r0 * PW; q < r1 * PW; ++q) h[b * R + q] += v * wi[q];
                    }
                    for (int64_t i = 0; n.pexc && i < K; ++i) {  // x[s] - p_t's filter at s
                        float v = xl[i];
                        for (int64_t q = 0; q < O; ++q) v -= w[q] * xl[i - O + q];
                        const float* wi = w2 + (1 + K + i) * R;
                        for (int64_t q = r0 * PW; q < r1 * PW; ++q) h[b * R + q] += v * wi[q];
                    }
                }
            }
        } else {
            for (int64_t b = 0; b < B; ++b)
                for (int64_t q = r0 * PW; q < r1 * PW; ++q) h[b * R + q] = j.x[b] * n.w_first[q];
        }
        for (int64_t b = 0; b < B; ++b)
            std::memcpy(s + b * S + s0 * PW, n.b_skip + s0 * PW, sizeof(float) * (s1 - s0) * PW);
        j.bar.wait();  // h complete
        for (int64_t i = 0; i < L; ++i) {
            const int64_t d = n.dil[i], a = g0 * PW, width = (g1 - g0) * PW;
            for (int64_t b = 0; b < B; ++b) {
                std::memcpy(ring_row(i, slot) + b * R + r0 * PW, h + b * R + r0 * PW,
                            sizeof(float) * (r1 - r0) * PW);
                std::memcpy(z + b * G + a, bt + (b * L + i) * G + a, sizeof(float) * width);
            }
            const W* wm = static_cast<const W*>(n.w_main[i]);
            if (n.blocked[i]) {
                gemm(h, R, B, wm, R, 0, R, g0, g1, z, G);
            } else {  // rows [h(t-(k-1)d), ..., h(t-d), h(t)] against the stacked taps
                for (int64_t b = 0; b < B; ++b) {
                    for (int64_t tap = 0; tap < k - 1; ++tap)
                        std::memcpy(taps + (b * k + tap) * R,
                                    ring_row(i, mod(t - (k - 1 - tap) * d, P)) + b * R,
                                    sizeof(float) * R);
                    std::memcpy(taps + (b * k + k - 1) * R, h + b * R, sizeof(float) * R);
                }
                gemm(taps, k * R, B, wm, k * R, 0, k * R, g0, g1, z, G);
            }
            for (int64_t b = 0; b < B; ++b) {  // tanh(a) sigmoid(b) / 2 = (s(2a) - 1/2) s(b)
                float* zb = z + b * G;
                sigmoid_inplace(zb + a, width);
                for (int64_t p = g0; p < g1; ++p) {
                    float* ub = u + b * LH + i * H + p * (PW / 2);
                    const float* zp = zb + p * PW;
#pragma omp simd
                    for (int64_t q = 0; q < PW / 2; ++q) ub[q] = (zp[q] - 0.5f) * zp[PW / 2 + q];
                }
            }
            j.bar.wait();  // u_i complete; everyone is done reading h
            if (i + 1 < L)
                for (int64_t b = 0; b < B; ++b)
                    for (int64_t q = r0 * PW; q < r1 * PW; ++q) h[b * R + q] *= c;
            // h += u_i @ w_out (not after the last layer); the skip sums over layer i's rows
            // of the stacked (L H, S) matrix, in the order of one product over all rows (the
            // same numbers), while the next layer runs
            gemm2(u + i * H, LH, B, i + 1 < L ? static_cast<const W*>(n.w_out[i]) : nullptr, H,
                  0, r0, r1, h, R, static_cast<const W*>(n.w_skip), LH, i * H, s0, s1, s, S, H);
            if (i + 1 < L) j.bar.wait();  // h complete
        }
        for (int64_t b = 0; b < B; ++b)
            std::memcpy(y1 + b * S + s0 * PW, n.b_post1 + s0 * PW,
                        sizeof(float) * (s1 - s0) * PW);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t q = s0 * PW; q < s1 * PW; ++q)
                s[b * S + q] = std::max(s[b * S + q], 0.f);
        j.bar.wait();
        gemm(s, S, B, static_cast<const E*>(n.w_post1), S, 0, S, s0, s1, y1, S);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t q = s0 * PW; q < s1 * PW; ++q)
                y1[b * S + q] = std::max(y1[b * S + q], 0.f);
        j.bar.wait();
        if (tid == 0) {
            for (int64_t b = 0; b < B; ++b) std::memcpy(y + b * C, n.b_post2, sizeof(float) * C);
            gemm(y1, S, B, static_cast<const E*>(n.w_post2), S, 0, S, 0, C / PW, y, C);
            const int64_t C_net = n.C_out - (O > 0);
            for (int64_t b = 0; b < B; ++b) {
                const float* yb = y + b * C;
                if (j.params) {
                    for (int64_t q = 0; q < C_net; ++q)
                        j.params[(b * n.C_out + q) * T + r] = yb[q];
                    if (O) j.params[(b * n.C_out + C_net) * T + r] = pc[b];
                }
                if (j.teacher) {
                    j.x[b] = j.teacher[b * T + r];
                } else {  // Gumbel-max component, then the logistic inverse CDF
                    const float* g = j.gumbel + (r * Bs + b) * M;
                    int64_t best = 0;
                    float top = yb[0] + g[0];
                    for (int64_t q = 1; q < M; ++q)
                        if (yb[q] + g[q] > top) top = yb[q] + g[q], best = q;
                    const float ls = std::max(yb[2 * M + best], n.log_scale_min);
                    const float v = yb[M + best] + std::exp(ls) * j.logistic[r * Bs + b];
                    j.x[b] = std::min(1.0f, std::max(-1.0f, v));
                    // LP: the prediction is added after the excitation's clip, so that the
                    // loop x = p + e stays linear (incremental.py, above sample_mol)
                    if (O) j.x[b] += pc[b];
                }
                j.out[b * T + r] = j.x[b];
            }
        }
        j.bar.wait();  // x complete
    }
    if (O && tid == 0)  // the history for the next call: the last O samples, the last p
        for (int64_t b = 0; b < B; ++b) {
            float* hr = hb.data() + b * HL;
            if (T) hr[HN + T - 1] = j.x[b];
            std::memcpy(j.hist + b * HN, hr + T, sizeof(float) * HN);
            j.pprev[b] = pp[b];
        }
}

static void setup(Job& j, const Net* n, int64_t B, int64_t nt) {
    j.n = n, j.B = B, j.nt = nt;
    j.h.resize(B * n->R), j.taps.resize(B * n->k * n->R), j.z.resize(B * n->G);
    j.u.resize(B * n->L * n->H), j.s.resize(B * n->S), j.y1.resize(B * n->S);
    j.y.resize(B * n->C);
    j.bar.n = nt;
}

static void run_job(Job& j, int64_t tid) {
#ifdef DMOL_DP
    if (j.n->bf16 == 2) return work<Bf16Pair>(j, tid);
#endif
    if (j.n->bf16 == 3) return work<Q8, float>(j, tid);
    if (j.n->bf16) work<uint16_t>(j, tid); else work<float>(j, tid);
}

// threads > 1: a batch of at least that many streams is split by streams (each thread runs
// its own rows, no synchronisation); a smaller one by columns of every product
extern "C" int dmol_wavenet_run(const Net* n, int64_t B, int64_t T, int64_t t0, float* ring,
                                float* x, const float* cond, const float* bias,
                                const float* gumbel, const float* logistic,
                                const float* teacher, float* out, float* params,
                                float* hist, float* pprev, const float* lpc,
                                const int64_t* lags,
                                float* work_base, int64_t threads) {
    const int64_t nt = std::max<int64_t>(1, threads);
    // by streams whenever each thread gets one: measured faster than by columns even for 6
    // streams on 2 threads with int8 weights (225 against 340 us per step), where a step's
    // share of one product between two barriers is only a few microseconds
    const bool by_rows = nt > 1 && B >= nt;
    // the projected conditioning of base_steps(B) steps: the caller's buffer (reused from call
    // to call, no page faults) or a fresh one
    std::vector<float> own(work_base ? 0 : dmol_base_floats(n, B));
    float* base = work_base ? work_base : own.data();
    std::vector<Job> jobs(by_rows ? nt : 1);
    for (int64_t q = 0; q < int64_t(jobs.size()); ++q) {
        Job& j = jobs[q];
        const int64_t b0 = by_rows ? B * q / nt : 0, b1 = by_rows ? B * (q + 1) / nt : B;
        setup(j, n, b1 - b0, by_rows ? 1 : nt);
        j.Bs = B, j.T = T, j.t0 = t0;
        j.ring = ring + b0 * n->R, j.x = x + b0, j.base = base + b0 * n->L * n->G;
        j.cond = cond + b0 * n->cin, j.bias = bias + b0 * n->L * n->G;
        j.gumbel = gumbel ? gumbel + b0 * n->M : nullptr;
        j.logistic = logistic ? logistic + b0 : nullptr;
        j.teacher = teacher ? teacher + b0 * T : nullptr;
        j.out = out + b0 * T, j.params = params ? params + b0 * n->C_out * T : nullptr;
        j.hist = hist ? hist + b0 * n->HN : nullptr, j.pprev = pprev ? pprev + b0 : nullptr;
        j.lpc = lpc ? lpc + b0 * T * n->order : nullptr;
        j.lags = lags ? lags + b0 * T : nullptr;
    }
    std::vector<std::thread> pool;
    if (by_rows) {
        for (int64_t q = 1; q < nt; ++q) pool.emplace_back(run_job, std::ref(jobs[q]), 0);
        run_job(jobs[0], 0);
    } else {
        for (int64_t tid = 1; tid < nt; ++tid) pool.emplace_back(run_job, std::ref(jobs[0]), tid);
        run_job(jobs[0], 0);
    }
    for (auto& th : pool) th.join();
    return 0;
}
