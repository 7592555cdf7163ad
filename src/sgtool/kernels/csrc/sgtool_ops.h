// Per-element maths shared by the CPU (C++) and CUDA kernels, so both compute the same numbers.
// Conventions (see ref.py): filters arrive as correlation taps, already flipped and gain-scaled
// on the Python side; an upsampled signal u has u[i*up] = x[i] and zeros elsewhere.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SG_HD __host__ __device__ __forceinline__
#else
#define SG_HD inline
#endif

namespace sgtool {

// Same order as ref.ACTIVATIONS; the Python side passes the index.
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;  // torch's F.softplus default

template <typename T>
SG_HD T sigmoid(T v) { return T(1) / (T(1) + exp(-v)); }

template <typename T>
SG_HD T act_forward(int act, T v, T alpha) {
    switch (act) {
        case kRelu: return v > T(0) ? v : T(0);
        case kLrelu: return v > T(0) ? v : v * alpha;
        case kTanh: return tanh(v);
        case kSigmoid: return sigmoid(v);
        case kElu: return v > T(0) ? v : expm1(v);
        case kSelu: return v > T(0) ? T(kSeluScale) * v : T(kSeluScale) * (T(kSeluAlpha) * expm1(v));
        case kSoftplus: return v > T(kSoftplusThreshold) ? v : log1p(exp(v));
        case kSwish: return sigmoid(v) * v;
        default: return v;
    }
}

// d act / d v at the pre-activation value v (matching torch's backward formulas).
template <typename T>
SG_HD T act_derivative(int act, T v, T alpha) {
    switch (act) {
        case kRelu: return v > T(0) ? T(1) : T(0);
        case kLrelu: return v > T(0) ? T(1) : alpha;
        case kTanh: { T y = tanh(v); return T(1) - y * y; }
        case kSigmoid: { T s = sigmoid(v); return s * (T(1) - s); }
        case kElu: return v > T(0) ? T(1) : exp(v);
        case kSelu: return v > T(0) ? T(kSeluScale) : T(kSeluScale) * T(kSeluAlpha) * exp(v);
        case kSoftplus: return v > T(kSoftplusThreshold) ? T(1) : sigmoid(v);
        case kSwish: { T s = sigmoid(v); return s + v * s * (T(1) - s); }
        default: return T(1);
    }
}

// bias_act on one element: act(v) * gain, clamped to [-clamp, clamp] when clamp >= 0.
template <typename T>
SG_HD T bias_act_value(int act, T v, T alpha, T gain, T clamp) {
    T y = act_forward(act, v, alpha);
    if (gain != T(1)) y = y * gain;
    if (clamp >= T(0)) y = y < -clamp ? -clamp : (y > clamp ? clamp : y);
    return y;
}

// Gradient factor of bias_act at pre-activation v; clamped outputs pass no gradient (as torch.clamp).
template <typename T>
SG_HD T bias_act_grad(int act, T v, T alpha, T gain, T clamp) {
    if (clamp >= T(0)) {
        T y = act_forward(act, v, alpha);
        if (gain != T(1)) y = y * gain;
        if (y < -clamp || y > clamp) return T(0);
    }
    return act_derivative(act, v, alpha) * gain;
}

// filtered_lrelu's nonlinearity, recording what the backward pass needs as a two-bit code (a byte
// each on CUDA, packed four to a byte on CPU): 0 = positive side, 1 = negative side (slope), 2 = clamped.
enum LreluCode : uint8_t { kPositive = 0, kNegative = 1, kClamped = 2 };

template <typename T>
SG_HD T lrelu_forward(T v, T gain, T slope, T clamp, uint8_t* code) {
    bool positive = v > T(0);
    T y = positive ? v : v * slope;
    if (gain != T(1)) y = y * gain;
    uint8_t c = positive ? kPositive : kNegative;
    if (clamp >= T(0) && (y < -clamp || y > clamp)) {
        y = y < -clamp ? -clamp : clamp;
        c = kClamped;
    }
    *code = c;
    return y;
}

template <typename T>
SG_HD T lrelu_grad(uint8_t code, T gain, T slope) {
    return code == kPositive ? gain : (code == kNegative ? slope * gain : T(0));
}

SG_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
SG_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }

// Which inputs reach output o of a 1-D upfirdn (upsample, pad by pad0 on the left, correlate with
// `taps` taps, keep every `down`-th): inputs i0 .. i0+n-1 through taps t0, t0+up, ...
struct TapRange {
    int i0;
    int t0;
    int n;
};

SG_HD TapRange tap_range(int o, int up, int down, int pad0, int taps, int in_len) {
    int m0 = o * down - pad0;  // upsampled position under tap 0
    int lo = ceil_div(m0, up);
    int hi = floor_div(m0 + taps - 1, up);
    if (lo < 0) lo = 0;
    if (hi > in_len - 1) hi = in_len - 1;
    TapRange r;
    r.i0 = lo;
    r.t0 = lo * up - m0;
    r.n = hi >= lo ? hi - lo + 1 : 0;
    return r;
}

// Length of a 1-D upfirdn output (the reference's valid correlation, then every down-th sample).
SG_HD int upfirdn_out_len(int in_len, int up, int down, int pad0, int pad1, int taps) {
    int full = in_len * up + pad0 + pad1 - taps + 1;
    return full < 1 ? 0 : (full - 1) / down + 1;
}

}  // namespace sgtool
