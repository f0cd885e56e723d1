// dmol discretized-logistic-mixture kernels (see dmol/fused.py): the NLL with its gradient in
// one pass, and the sampler. Parameters come as (A, 3M, T) = [logits | means | log-scales]
// with contiguous rows of T samples; every other array is a contiguous (A, T) or (A, 3M, T).
//
// The math is that of `_nll_kernel` / `_sample_kernel` in fused.py (the eager fallback),
// operation for operation. Samples are processed in blocks of TB: each step is a plain loop
// over the block that the compiler vectorizes (`#pragma omp simd`; AVX-512 or AVX2 lanes with
// -march=native), with exp and log written here as branch-free polynomials so that the loops
// have no library calls in them. Threads (std::thread) split the (row, block) work items.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

constexpr int64_t TB = 64;    // samples per block: 5 M TB scratch values stay in L1/L2
constexpr double BIG = 1e30;  // "infinite" standardized distance (e^-BIG = 0)

template <class T> struct Fp;
template <> struct Fp<float> {
    using U = uint32_t;
    static constexpr int MB = 23, BIAS = 127;
    static constexpr float SHIFT = 12582912.0f;  // 1.5 * 2^23: x + SHIFT rounds x to an integer
    static constexpr float LO = -87.0f, HI = 88.0f;  // e^x: 0 below, inf above
    static constexpr float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    static constexpr int EXP_TERMS = 7, LOG_TERMS = 5, EXPM1_TERMS = 9;
    static constexpr float DENORM_SCALE = 4294967296.0f;  // 2^32
    static constexpr int DENORM_BITS = 32;
};
template <> struct Fp<double> {
    using U = uint64_t;
    static constexpr int MB = 52, BIAS = 1023;
    static constexpr double SHIFT = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double LO = -708.0, HI = 709.0;
    static constexpr double LN2_HI = 6.93147180369123816490e-01;  // ln 2, low bits zero
    static constexpr double LN2_LO = 1.90821492927058770002e-10;  // ln 2 - LN2_HI
    static constexpr int EXP_TERMS = 13, LOG_TERMS = 11, EXPM1_TERMS = 17;
    static constexpr double DENORM_SCALE = 18446744073709551616.0;  // 2^64
    static constexpr int DENORM_BITS = 64;
};

template <class T> inline typename Fp<T>::U bits(T x) {
    typename Fp<T>::U u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
template <class T> inline T from_bits(typename Fp<T>::U u) {
    T x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

template <int N> struct InvFactorials {  // 1/n! for n <= N + 1, at compile time
    double v[N + 2] = {};
    constexpr InvFactorials() {
        double f = 1.0;
        for (int n = 0; n <= N + 1; ++n) v[n] = 1.0 / (f *= (n > 0 ? n : 1));
    }
};

// 2^k for an integer-valued k held as kS = k + SHIFT (|k| within the normal exponents): the
// bit pattern's low bits are k itself, so no float-to-int conversion (which AVX2 lacks for 64
// bits) is needed
template <class T> inline T pow2_shifted(T kS) {
    using F = Fp<T>;
    using U = typename F::U;
    const U k = bits<T>(kS) - bits<T>(F::SHIFT);  // two's complement k
    return from_bits<T>((k + U(F::BIAS)) << F::MB);
}

// e^x to about 1 ulp: x = k ln2 + r, |r| <= ln2/2, e^r by its Taylor series (degree 7 for
// float, 13 for double: truncation below half an ulp), times 2^k. Results below the smallest
// normal number are 0 (the eager math would give a subnormal): every value here is summed
// with or divided by numbers at least e^-43 times larger, where that difference vanishes.
template <class T> inline T vexp(T x) {
    using F = Fp<T>;
    static constexpr InvFactorials<F::EXP_TERMS> inv{};
    const T xc = std::min(std::max(x, T(F::LO)), T(F::HI));
    const T kS = xc * T(1.4426950408889634) + F::SHIFT;
    const T k = kS - F::SHIFT;
    const T r = (xc - k * F::LN2_HI) - k * F::LN2_LO;
    T p = T(inv.v[F::EXP_TERMS]);
#pragma GCC unroll 32
    for (int n = F::EXP_TERMS - 1; n >= 0; --n) p = p * r + T(inv.v[n]);
    T res = p * pow2_shifted<T>(kS);
    res = x < T(F::LO) ? T(0) : res;
    res = x > T(F::HI) ? std::numeric_limits<T>::infinity() : res;
    return x != x ? x : res;
}

// log x to about 1 ulp: x = 2^e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
// s = (m - 1)/(m + 1), |s| <= 0.172, by its series in s^2.
template <class T> inline T vlog(T x) {
    using F = Fp<T>;
    using U = typename F::U;
    const bool sub = x < std::numeric_limits<T>::min();
    const T xs = sub ? x * F::DENORM_SCALE : x;
    const U b = bits<T>(xs);
    const U mant = (b & ((U(1) << F::MB) - 1)) | (U(F::BIAS) << F::MB);
    T m = from_bits<T>(mant);
    // the biased exponent as a float: the integer e placed in the mantissa of 2^MB
    const T two_mb = from_bits<T>(U(F::BIAS + F::MB) << F::MB);
    T e = from_bits<T>((b >> F::MB) | bits<T>(two_mb)) - two_mb - T(F::BIAS);
    e = sub ? e - T(F::DENORM_BITS) : e;
    const bool big = m > T(1.4142135623730951);
    m = big ? m * T(0.5) : m;
    e = big ? e + T(1) : e;
    const T s = (m - T(1)) / (m + T(1));
    const T s2 = s * s;
    T p = T(1) / T(2 * F::LOG_TERMS + 1);
#pragma GCC unroll 32
    for (int n = F::LOG_TERMS - 1; n >= 0; --n) p = T(1) / T(2 * n + 1) + s2 * p;
    T res = e * F::LN2_HI + (e * F::LN2_LO + T(2) * s * p);
    res = x == T(0) ? -std::numeric_limits<T>::infinity() : res;
    res = x < T(0) ? std::numeric_limits<T>::quiet_NaN() : res;
    res = x == std::numeric_limits<T>::infinity() ? x : res;
    return x != x ? x : res;
}

// log(1 + z) for z > -1: log(u) z / (u - 1) with u = 1 + z corrects u's rounding error
template <class T> inline T vlog1p(T z) {
    const T u = T(1) + z;
    const T d = u - T(1);
    return d == T(0) ? z : vlog(u) * (z / d);
}

// 1 - e^-c to full relative precision given ec = e^-c (see `_one_minus_exp` in fused.py)
template <class T> inline T one_minus_exp(T c, T ec) {
    constexpr int N = Fp<T>::EXPM1_TERMS;
    static constexpr InvFactorials<N> inv{};
    T poly = T(inv.v[N + 1]);
#pragma GCC unroll 32
    for (int n = N; n >= 1; --n) poly = T(inv.v[n]) - c * poly;
    return c < T(0.6931471805599453) ? c * poly : T(1) - ec;
}

// Runs f(first, last) over [0, n) work items on up to nt threads (the caller's included)
template <class Fn> void parallel(int64_t n, int nt, Fn f) {
    nt = int(std::max<int64_t>(1, std::min<int64_t>(nt, n)));
    if (nt == 1) return f(int64_t(0), n);
    std::vector<std::thread> pool;
    for (int i = 1; i < nt; ++i) pool.emplace_back(f, n * i / nt, n * (i + 1) / nt);
    f(0, n / nt);
    for (auto& t : pool) t.join();
}

// The bin's edges (centre -+ h, formed in float64: exact ties, and each split as hi + lo in T,
// so that (hi - mu) + lo is the distance to the edge as precisely as that distance itself),
// the edge-bin flags (0/1 in T: bool arrays do not vectorize) and the centre in T.
template <class T>
inline void bin_edges(double y, double k_max, T& lo_h, T& lo_l, T& up_h, T& up_l, T& first,
                      T& last, T& centre) {
    double k = std::rint((y + 1.0) * (0.5 * k_max));
    k = std::min(std::max(k, 0.0), k_max);
    const double lo = (2.0 * k - 1.0) / k_max - 1.0, up = (2.0 * k + 1.0) / k_max - 1.0;
    lo_h = T(lo), lo_l = T(lo - double(lo_h));
    up_h = T(up), up_l = T(up - double(up_h));
    first = T(k == 0.0), last = T(k == k_max);
    centre = T((2.0 * k) / k_max - 1.0);
}

// One logistic's mass of the bin as P = e^-dist q (dist >= 0 scales between the bin and the
// mean, q in (0, 1]) and d log P / d mu, d log P / d log-scale (0 where the clamp at lsm is
// active): `_log_mass` in fused.py, derivation in docs/speed.md.
template <class T>
inline void log_mass(T mu, T ls, T lo_h, T lo_l, T up_h, T up_l, T first, T last, T h2, T lsm,
                     T tiny, T& neg_dist, T& q, T& dmu, T& dls) {
    const T inv_s = vexp<T>(-std::max(ls, lsm));
    // an edge bin's outer edge at -+infinity: a huge finite value makes its terms vanish
    const T a_ = first != T(0) ? T(-BIG) : ((lo_h - mu) + lo_l) * inv_s;
    const T b_ = last != T(0) ? T(BIG) : ((up_h - mu) + up_l) * inv_s;
    const T c = first + last != T(0) ? T(BIG) : h2 * inv_s;
    const T ec = vexp<T>(-c);
    const T aa = std::abs(a_), ab = std::abs(b_);
    // one exp for both edges: the far one is the near one times e^-c, or (the mean inside the
    // bin, a < 0 < b) e^-c over the near one. No bool temporaries: they block the vectorizer.
    const T e_near = vexp<T>(-std::min(aa, ab));
    const T e_far = std::min(-a_, b_) > T(0) ? ec / std::max(e_near, tiny) : e_near * ec;
    const T ea = aa <= ab ? e_near : e_far, eb = aa <= ab ? e_far : e_near;
    const T om = one_minus_exp<T>(c, ec);
    const T da = T(1) + ea, db = T(1) + eb;
    const T inv = T(1) / (da * db * om);  // one division for three quotients
    const T iab = om * inv;
    q = om * iab;
    neg_dist = std::min(b_, T(0)) - std::max(a_, T(0));
    const T ta = (a_ >= T(0) ? T(1) : ea) * (db * iab);  // sigmoid(a)
    const T tb = (b_ >= T(0) ? eb : T(1)) * (da * iab);  // sigmoid(-b)
    const T tc = om > T(0) ? c * ec * (da * db * inv) : T(1);
    dmu = inv_s * (ta - tb);
    dls = ls >= lsm ? a_ * ta - b_ * tb - tc : T(0);
}

template <class T>
void nll_rows(const T* p, int64_t sA, int64_t sC, const T* y, const T* loc, int64_t A,
              int64_t M, int64_t Tn, double k_max, T lsm, T gs, T* nll, T* grad, T* gloc,
              int nt) {
    const int64_t nb = (Tn + TB - 1) / TB;
    const T h2 = T(2) * (T(1) / T(k_max));
    const T tiny = std::numeric_limits<T>::min();
    parallel(A * nb, nt, [=](int64_t w0, int64_t w1) {
        // the constants as locals: stores to T arrays could alias the closure's copies
        const T lsm_ = lsm, h2_ = h2, tiny_ = tiny, gs_ = gs;
        // per component j: X = logit + (-dist), Q = q (later the joint's weights e_j),
        // DMU / DLS = dlogP/dmu, dlogP/dls, EL = e^(logit - top)
        std::vector<T> scratch(5 * M * TB);
        T *X = scratch.data(), *Q = X + M * TB, *DMU = Q + M * TB, *DLS = DMU + M * TB,
          *EL = DLS + M * TB;
        // (the edge-bin flags as 0/1 in T: bool arrays do not vectorize)
        alignas(64) T lo_h[TB], lo_l[TB], up_h[TB], up_l[TB], topl[TB], topj[TB], zl[TB],
            zj[TB], shift[TB], first[TB], last[TB];
        for (int64_t w = w0; w < w1; ++w) {
            const int64_t a = w / nb, t0 = (w % nb) * TB, n = std::min(TB, Tn - t0);
            const T* yr = y + a * Tn + t0;
            // the bin's edges in float64 (exact ties), each split as hi + lo in T
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                T centre;
                bin_edges<T>(double(yr[i]), k_max, lo_h[i], lo_l[i], up_h[i], up_l[i], first[i],
                             last[i], centre);
                shift[i] = loc[a * Tn + t0 + i];
                topl[i] = -std::numeric_limits<T>::infinity();
                topj[i] = -std::numeric_limits<T>::infinity();
                zl[i] = T(0), zj[i] = T(0);
            }
            const T* base = p + a * sA + t0;
            for (int64_t j = 0; j < M; ++j) {
                const T *lg = base + j * sC, *mu0 = base + (M + j) * sC,
                        *ls = base + (2 * M + j) * sC;
                T *x = X + j * TB, *q = Q + j * TB, *dmu = DMU + j * TB, *dls = DLS + j * TB;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    const T mu = mu0[i] + shift[i];
                    T neg_dist;
                    log_mass<T>(mu, ls[i], lo_h[i], lo_l[i], up_h[i], up_l[i], first[i], last[i],
                                h2_, lsm_, tiny_, neg_dist, q[i], dmu[i], dls[i]);
                    x[i] = lg[i] + neg_dist;
                    topl[i] = std::max(topl[i], lg[i]);
                    topj[i] = std::max(topj[i], x[i]);
                }
            }
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {  // all -inf (or a +inf): no shift, no NaN
                topl[i] = std::abs(topl[i]) == std::numeric_limits<T>::infinity() ? T(0) : topl[i];
                topj[i] = std::abs(topj[i]) == std::numeric_limits<T>::infinity() ? T(0) : topj[i];
            }
            for (int64_t j = 0; j < M; ++j) {
                const T* lg = base + j * sC;
                T *x = X + j * TB, *q = Q + j * TB, *el = EL + j * TB;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    el[i] = vexp<T>(lg[i] - topl[i]);
                    q[i] = vexp<T>(x[i] - topj[i]) * q[i];
                    zl[i] += el[i];
                    zj[i] += q[i];
                }
            }
            T* out = nll + a * Tn + t0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
                out[i] = (topl[i] + vlog<T>(zl[i])) - (topj[i] + vlog<T>(zj[i]));
            if (grad == nullptr) continue;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) zl[i] = gs_ / zl[i], zj[i] = gs_ / zj[i];
            T* g = grad + a * 3 * M * Tn + t0;
            T* gl = gloc + a * Tn + t0;
            for (int64_t j = 0; j < M; ++j) {
                const T *q = Q + j * TB, *el = EL + j * TB, *dmu = DMU + j * TB,
                        *dls = DLS + j * TB;
                T *g_lg = g + j * Tn, *g_mu = g + (M + j) * Tn, *g_ls = g + (2 * M + j) * Tn;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    const T r = q[i] * zj[i];  // responsibility (times gscale)
                    g_lg[i] = el[i] * zl[i] - r;
                    const T gm = -r * dmu[i];
                    g_mu[i] = gm;
                    g_ls[i] = -r * dls[i];
                    gl[i] = j == 0 ? gm : gl[i] + gm;
                }
            }
        }
    });
}

template <class T>
void sample_rows(const T* p, int64_t sA, int64_t sC, const T* u, const T* loc, int64_t A,
                 int64_t M, int64_t Tn, T inv_temp, T log_st, T lsm, T* out, int nt) {
    const int64_t nb = (Tn + TB - 1) / TB;
    const T tiny = std::numeric_limits<T>::min();
    parallel(A * nb, nt, [=](int64_t w0, int64_t w1) {
        const T inv_temp_ = inv_temp, log_st_ = log_st, lsm_ = lsm, tiny_ = tiny;
        alignas(64) T top[TB], total[TB], target[TB], cum[TB], pmu[TB], pls[TB];
        for (int64_t w = w0; w < w1; ++w) {
            const int64_t a = w / nb, t0 = (w % nb) * TB, n = std::min(TB, Tn - t0);
            const T* base = p + a * sA + t0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) top[i] = base[i], total[i] = T(0);
            for (int64_t j = 1; j < M; ++j) {
                const T* lg = base + j * sC;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) top[i] = std::max(top[i], lg[i]);
            }
            // the weights are recomputed in the second pass rather than stored: exp is cheap
            for (int64_t j = 0; j < M; ++j) {
                const T* lg = base + j * sC;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) total[i] += vexp<T>((lg[i] - top[i]) * inv_temp_);
            }
            const T* u0 = u + a * Tn + t0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                target[i] = u0[i] * total[i];
                cum[i] = vexp<T>((base[i] - top[i]) * inv_temp_);
                pmu[i] = base[M * sC + i], pls[i] = base[2 * M * sC + i];
            }
            for (int64_t j = 1; j < M; ++j) {  // component j when target >= w_0 + ... + w_{j-1}
                const T *lg = base + j * sC, *mu = base + (M + j) * sC,
                        *ls = base + (2 * M + j) * sC;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    const bool later = target[i] >= cum[i];
                    pmu[i] = later ? mu[i] : pmu[i];
                    pls[i] = later ? ls[i] : pls[i];
                    cum[i] += vexp<T>((lg[i] - top[i]) * inv_temp_);
                }
            }
            const T *u1 = u + A * Tn + a * Tn + t0, *sh = loc + a * Tn + t0;
            T* o = out + a * Tn + t0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                const T v = std::max(u1[i], tiny_);  // log(v) must stay finite
                const T scale = vexp<T>(std::max(pls[i], lsm_) + log_st_);
                const T x = (pmu[i] + sh[i]) + scale * (vlog<T>(v) - vlog1p<T>(-v));
                o[i] = std::min(std::max(x, T(-1)), T(1));
            }
        }
    });
}

// PixelCNN++'s channel-coupled head, C channels (1 to 3): l (B, M(1 + 3C), S) holds M logits,
// then per channel [means M | log-scales M | raw coefficients M]; targets x (B, C, S).
// Component m's channel c has mean means[c] + sum_{j<c} tanh(raw[c(c-1)/2 + j]) centre_j, the
// coefficient blocks read in order (see dmol.coupled), and P_m = prod_c P_m(x_c | x_<c).
// NLL (B, S) and, when grad is not null, its gradient (B, M(1 + 3C), S) w.r.t. l times gs.
template <class T, int C>
void coupled_rows(const T* l, int64_t sB, int64_t sC, const T* xs, int64_t B, int64_t M,
                  int64_t S, double k_max, T lsm, T gs, T* nll, T* grad, int nt) {
    constexpr int NC = C * (C - 1) / 2;
    const int64_t nb = (S + TB - 1) / TB, R = M * (1 + 3 * C);
    const T h2 = T(2) * (T(1) / T(k_max));
    const T tiny = std::numeric_limits<T>::min();
    parallel(B * nb, nt, [=](int64_t w0, int64_t w1) {
        const T lsm_ = lsm, h2_ = h2, tiny_ = tiny, gs_ = gs;
        // per component m: X = logit - (sum of the channels' dist), W = prod of their q (later
        // the joint's weight), EL = e^(logit - top); per (channel, m): DMU, DLS; per
        // (coefficient, m): TH = its tanh
        std::vector<T> scratch((3 + 2 * C + NC) * M * TB);
        T *X = scratch.data(), *W = X + M * TB, *EL = W + M * TB, *DMU = EL + M * TB,
          *DLS = DMU + C * M * TB, *TH = DLS + C * M * TB;
        alignas(64) T lo_h[C][TB], lo_l[C][TB], up_h[C][TB], up_l[C][TB], first[C][TB],
            last[C][TB], cen[C][TB], topl[TB], topj[TB], zl[TB], zj[TB];
        for (int64_t w = w0; w < w1; ++w) {
            const int64_t b = w / nb, t0 = (w % nb) * TB, n = std::min(TB, S - t0);
            for (int c = 0; c < C; ++c) {
                const T* xr = xs + (b * C + c) * S + t0;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i)
                    bin_edges<T>(double(xr[i]), k_max, lo_h[c][i], lo_l[c][i], up_h[c][i],
                                 up_l[c][i], first[c][i], last[c][i], cen[c][i]);
            }
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                topl[i] = -std::numeric_limits<T>::infinity();
                topj[i] = -std::numeric_limits<T>::infinity();
                zl[i] = T(0), zj[i] = T(0);
            }
            const T* base = l + b * sB + t0;
            for (int64_t m = 0; m < M; ++m) {
                for (int q = 0; q < NC; ++q) {  // tanh(r) = 1 - 2 / (e^2r + 1)
                    const T* raw = base + (M + q * 3 * M + 2 * M + m) * sC;
                    T* th = TH + (q * M + m) * TB;
#pragma omp simd
                    for (int64_t i = 0; i < n; ++i)
                        th[i] = T(1) - T(2) / (vexp<T>(T(2) * raw[i]) + T(1));
                }
                const T* lg = base + m * sC;
                T *x = X + m * TB, *wq = W + m * TB;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    T xm = lg[i], wm = T(1);
#pragma GCC unroll 4
                    for (int c = 0; c < C; ++c) {
                        T mu = base[(M + c * 3 * M + m) * sC + i];
#pragma GCC unroll 4
                        for (int j = 0; j < c; ++j)
                            mu += TH[((c * (c - 1) / 2 + j) * M + m) * TB + i] * cen[j][i];
                        T neg_dist, q;
                        log_mass<T>(mu, base[(M + c * 3 * M + M + m) * sC + i], lo_h[c][i],
                                    lo_l[c][i], up_h[c][i], up_l[c][i], first[c][i], last[c][i],
                                    h2_, lsm_, tiny_, neg_dist, q, DMU[(c * M + m) * TB + i],
                                    DLS[(c * M + m) * TB + i]);
                        xm += neg_dist;
                        wm *= q;
                    }
                    x[i] = xm, wq[i] = wm;
                    topl[i] = std::max(topl[i], lg[i]);
                    topj[i] = std::max(topj[i], xm);
                }
            }
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
                topl[i] = std::abs(topl[i]) == std::numeric_limits<T>::infinity() ? T(0) : topl[i];
                topj[i] = std::abs(topj[i]) == std::numeric_limits<T>::infinity() ? T(0) : topj[i];
            }
            for (int64_t m = 0; m < M; ++m) {
                const T* lg = base + m * sC;
                T *x = X + m * TB, *wq = W + m * TB, *el = EL + m * TB;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) {
                    el[i] = vexp<T>(lg[i] - topl[i]);
                    wq[i] = vexp<T>(x[i] - topj[i]) * wq[i];
                    zl[i] += el[i];
                    zj[i] += wq[i];
                }
            }
            T* out = nll + b * S + t0;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
                out[i] = (topl[i] + vlog<T>(zl[i])) - (topj[i] + vlog<T>(zj[i]));
            if (grad == nullptr) continue;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) zl[i] = gs_ / zl[i], zj[i] = gs_ / zj[i];
            T* g = grad + b * R * S + t0;
            for (int64_t m = 0; m < M; ++m) {
                const T *wq = W + m * TB, *el = EL + m * TB;
                T* g_lg = g + m * S;
#pragma omp simd
                for (int64_t i = 0; i < n; ++i) g_lg[i] = el[i] * zl[i] - wq[i] * zj[i];
                for (int c = 0; c < C; ++c) {
                    const T *dmu = DMU + (c * M + m) * TB, *dls = DLS + (c * M + m) * TB;
                    T *g_mu = g + (M + c * 3 * M + m) * S, *g_ls = g + (M + c * 3 * M + M + m) * S;
#pragma omp simd
                    for (int64_t i = 0; i < n; ++i) {
                        const T r = wq[i] * zj[i];  // responsibility (times gs)
                        g_mu[i] = -r * dmu[i];
                        g_ls[i] = -r * dls[i];
                    }
                    T* g_cf = g + (M + c * 3 * M + 2 * M + m) * S;  // block c's coefficients
                    if (c >= NC) {  // unused by fewer than 3 channels
#pragma omp simd
                        for (int64_t i = 0; i < n; ++i) g_cf[i] = T(0);
                        continue;
                    }
                    // coefficient q = c shifts channel cc's mean by its tanh times centre_j
                    int cc = 1, j = c;
                    while (j >= cc) j -= cc, ++cc;
                    const T *th = TH + (c * M + m) * TB, *dm = DMU + (cc * M + m) * TB;
#pragma omp simd
                    for (int64_t i = 0; i < n; ++i) {
                        const T r = wq[i] * zj[i];
                        g_cf[i] = -r * dm[i] * cen[j][i] * (T(1) - th[i] * th[i]);
                    }
                }
            }
        }
    });
}

}  // namespace

// Each (part, dtype) is built on its own, on first use (-DDMOL_PART_MOL or -DDMOL_PART_COUPLED,
// -DDMOL_F32 or -DDMOL_F64): a first process pays only for what it runs. Without them: all.
#if !defined(DMOL_PART_MOL) && !defined(DMOL_PART_COUPLED)
#define DMOL_PART_MOL 1
#define DMOL_PART_COUPLED 1
#endif
#if !defined(DMOL_F32) && !defined(DMOL_F64)
#define DMOL_F32 1
#define DMOL_F64 1
#endif

extern "C" {

// NLL (A, T) and, when grad is not null, its gradient (A, 3M, T) w.r.t. p times gscale and
// the gradient (A, T) w.r.t. loc; p's rows: element (a, c, t) at p[a sA + c sC + t].
#if defined(DMOL_PART_MOL) && defined(DMOL_F32)
int dmol_mol_nll_f32(const float* p, int64_t sA, int64_t sC, const float* y, const float* loc,
                     int64_t A, int64_t M, int64_t T, double k_max, double lsm, double gscale,
                     float* nll, float* grad, float* gloc, int nt) {
    nll_rows<float>(p, sA, sC, y, loc, A, M, T, k_max, float(lsm), float(gscale), nll, grad,
                    gloc, nt);
    return 0;
}

#endif
#if defined(DMOL_PART_MOL) && defined(DMOL_F64)
int dmol_mol_nll_f64(const double* p, int64_t sA, int64_t sC, const double* y,
                     const double* loc, int64_t A, int64_t M, int64_t T, double k_max,
                     double lsm, double gscale, double* nll, double* grad, double* gloc,
                     int nt) {
    nll_rows<double>(p, sA, sC, y, loc, A, M, T, k_max, lsm, gscale, nll, grad, gloc, nt);
    return 0;
}

#endif

// Draws (A, T) from p shifted by loc, with uniforms u (2, A, T): u[0] picks the component.
#if defined(DMOL_PART_MOL) && defined(DMOL_F32)
int dmol_mol_sample_f32(const float* p, int64_t sA, int64_t sC, const float* u,
                        const float* loc, int64_t A, int64_t M, int64_t T, double inv_temp,
                        double log_st, double lsm, float* out, int nt) {
    sample_rows<float>(p, sA, sC, u, loc, A, M, T, float(inv_temp), float(log_st), float(lsm),
                       out, nt);
    return 0;
}

#endif
#if defined(DMOL_PART_MOL) && defined(DMOL_F64)
int dmol_mol_sample_f64(const double* p, int64_t sA, int64_t sC, const double* u,
                        const double* loc, int64_t A, int64_t M, int64_t T, double inv_temp,
                        double log_st, double lsm, double* out, int nt) {
    sample_rows<double>(p, sA, sC, u, loc, A, M, T, inv_temp, log_st, lsm, out, nt);
    return 0;
}

#endif

// The channel-coupled (PixelCNN++) NLL: see coupled_rows. Returns 1 for C outside 1..3.
#define DMOL_COUPLED(T, SUF)                                                                  \
    int dmol_coupled_nll_##SUF(const T* l, int64_t sB, int64_t sC, const T* x, int64_t B,     \
                               int64_t C, int64_t M, int64_t S, double k_max, double lsm,     \
                               double gscale, T* nll, T* grad, int nt) {                      \
        if (C == 1) coupled_rows<T, 1>(l, sB, sC, x, B, M, S, k_max, T(lsm), T(gscale), nll,   \
                                       grad, nt);                                              \
        else if (C == 2) coupled_rows<T, 2>(l, sB, sC, x, B, M, S, k_max, T(lsm), T(gscale),   \
                                            nll, grad, nt);                                    \
        else if (C == 3) coupled_rows<T, 3>(l, sB, sC, x, B, M, S, k_max, T(lsm), T(gscale),   \
                                            nll, grad, nt);                                    \
        else return 1;                                                                         \
        return 0;                                                                              \
    }
#if defined(DMOL_PART_COUPLED) && defined(DMOL_F32)
DMOL_COUPLED(float, f32)
#endif
#if defined(DMOL_PART_COUPLED) && defined(DMOL_F64)
DMOL_COUPLED(double, f64)
#endif

}  // extern "C"
