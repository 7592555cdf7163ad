// CPU kernels: each (batch, channel) plane is resampled by one thread with polyphase loops that
// touch only the nonzero taps and compute only the kept outputs. Where an axis only up- or only
// downsamples (every StyleGAN3 stage and its transpose), the inner loops are contiguous row updates
// (out_row += tap * in_row) over rows split into phases, which the compiler vectorises; other
// combinations take one dot product per output. filtered_lrelu and its backward keep one plane's
// intermediates in per-thread buffers instead of materialising them for the whole batch.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "sgtool_ops.h"

namespace sgtool {
namespace {

struct Axis {
    int up, down, pad0, taps, in_len, out_len;
    std::vector<TapRange> ranges;  // per output sample
};

Axis make_axis(int in_len, int up, int down, int pad0, int pad1, int taps) {
    Axis a{up, down, pad0, taps, in_len, upfirdn_out_len(in_len, up, down, pad0, pad1, taps), {}};
    a.ranges.reserve(a.out_len);
    for (int o = 0; o < a.out_len; ++o) a.ranges.push_back(tap_range(o, up, down, pad0, taps, in_len));
    return a;
}

// Whether x resampling can use the row helpers (else one dot product per output).
inline bool rows_vectorise(const Axis& x) { return x.up == 1 || x.down == 1; }

template <typename T>
struct Stage {
    Axis x, y;
    std::vector<T> f;  // correlation taps: 1-D (separable, both axes) or fh x fw
    int fw, fh;
    bool separable;
    bool y_first;
    // Separable x taps regrouped by phase so that each output reads contiguous taps.
    std::vector<T> xphase;
    int xkmax;

    const T* x_taps(const TapRange& r) const {
        return xphase.data() + (r.t0 % x.up) * xkmax + r.t0 / x.up;
    }
};

template <typename T>
Stage<T> make_stage(const torch::Tensor& f, int in_h, int in_w, int upx, int upy, int downx, int downy, int px0,
                    int px1, int py0, int py1) {
    TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filter must be 1-D or 2-D");
    auto fc = f.contiguous();
    Stage<T> s;
    s.separable = f.dim() == 1;
    s.fw = s.separable ? f.size(0) : f.size(1);
    s.fh = s.separable ? f.size(0) : f.size(0);
    s.f.assign(fc.data_ptr<T>(), fc.data_ptr<T>() + fc.numel());
    s.x = make_axis(in_w, upx, downx, px0, px1, s.fw);
    s.y = make_axis(in_h, upy, downy, py0, py1, s.fh);
    s.xkmax = (s.fw + upx - 1) / upx;
    s.xphase.assign((size_t)upx * s.xkmax, T(0));
    for (int t = 0; t < s.fw && s.separable; ++t) s.xphase[(t % upx) * s.xkmax + t / upx] = s.f[t];
    // Run first whichever pass order costs fewer multiply-adds, weighing the x pass double when it
    // cannot use row updates (one dot product per output).
    double tx = double(s.fw) / upx * (rows_vectorise(s.x) ? 1.0 : 2.0), ty = double(s.fh) / upy;
    double x_first = double(in_h) * s.x.out_len * tx + double(s.y.out_len) * s.x.out_len * ty;
    double y_first = double(s.y.out_len) * in_w * ty + double(s.y.out_len) * s.x.out_len * tx;
    s.y_first = y_first < x_first;
    return s;
}

struct NoEpilogue {
    template <typename T>
    void operator()(T*, int, int) const {}
};

// Per-thread buffers for a stage's intermediates, reused across planes.
template <typename T>
struct Scratch {
    std::vector<T> mid, rows, phases, biased, ring;
};

template <typename T>
T* sized(std::vector<T>& v, int64_t n) {
    if ((int64_t)v.size() < n) v.resize(n);
    return v.data();
}

// dst[i] += sum_{k < N} w[k * wstride] * (base + k * step)[i] for i < n, all N taps in one sweep.
template <int N, typename T>
void add_taps_fixed(T* dst, int n, const T* base, int64_t step, const T* w, int wstride) {
    T wk[N];
    const T* src[N];
    for (int k = 0; k < N; ++k) {
        wk[k] = w[k * wstride];
        src[k] = base + k * step;
    }
    // dst never overlaps the sources: said to the compiler, so that the vectorised loop needs no overlap check.
#pragma GCC ivdep
    for (int i = 0; i < n; ++i) {
        T acc = dst[i];
        for (int k = 0; k < N; ++k) acc += wk[k] * src[k][i];
        dst[i] = acc;
    }
}

// The same for any number of taps, up to eight per sweep, so each dst element is loaded and stored
// once per several multiply-adds.
template <typename T>
void add_taps(T* dst, int n, const T* base, int64_t step, const T* w, int wstride, int count) {
    for (int k = 0; k < count; k += 8) {
        const T* b = base + k * step;
        const T* wk = w + k * wstride;
        switch (std::min(count - k, 8)) {
            case 1: add_taps_fixed<1>(dst, n, b, step, wk, wstride); break;
            case 2: add_taps_fixed<2>(dst, n, b, step, wk, wstride); break;
            case 3: add_taps_fixed<3>(dst, n, b, step, wk, wstride); break;
            case 4: add_taps_fixed<4>(dst, n, b, step, wk, wstride); break;
            case 5: add_taps_fixed<5>(dst, n, b, step, wk, wstride); break;
            case 6: add_taps_fixed<6>(dst, n, b, step, wk, wstride); break;
            case 7: add_taps_fixed<7>(dst, n, b, step, wk, wstride); break;
            default: add_taps_fixed<8>(dst, n, b, step, wk, wstride); break;
        }
    }
}

// Resample along the row index: out row o = sum_k taps[t0 + k*up] * in row (i0 + k).
// Each final pass writes output row o at out + o * out_stride: the plane's row length, or 0 to reuse one
// row buffer when the epilogue consumes every row as it comes (filtered_lrelu's streamed stages).
template <typename T, typename Epi>
void pass_rows(const Axis& a, const T* taps, const T* in, int width, T* out, const Epi& epi, int64_t out_stride) {
    for (int o = 0; o < a.out_len; ++o) {
        T* dst = out + o * out_stride;
        const TapRange& tr = a.ranges[o];
        std::fill(dst, dst + width, T(0));
        add_taps(dst, width, in + (int64_t)tr.i0 * width, width, taps + tr.t0, a.up, tr.n);
        epi(dst, o, width);
    }
}

// Rows laid out for x resampling with row updates (axes that only up- or only downsample): each
// row is split into `down` phases (phase p holds samples p, p + down, ...) of `phase_len` values,
// sample j of a phase at `lead + j`, zeros around, so every tap reads a whole run without bounds checks.
struct RowLayout {
    int down, lead, phase_len, width;  // width = down * phase_len
};

RowLayout row_layout(const Axis& ax) {
    RowLayout l;
    l.down = ax.down;
    const int count = (ax.in_len + ax.down - 1) / ax.down;
    int last;  // highest phase index any tap reads
    if (ax.up == 1) {
        l.lead = std::max(0, -floor_div(-ax.pad0, ax.down));
        last = ax.out_len - 1 + floor_div(ax.taps - 1 - ax.pad0, ax.down);
    } else {
        l.lead = std::max(0, -floor_div(-ax.pad0, ax.up));
        last = (ax.out_len + ax.up - 1) / ax.up - 1 + floor_div(ax.up - 1 - ax.pad0 + ax.taps - 1, ax.up);
    }
    l.phase_len = l.lead + std::max(count, last + 1);
    l.width = l.down * l.phase_len;
    return l;
}

template <typename T>
void lay_out_row(const T* src, int len, const RowLayout& l, T* dst) {
    std::fill(dst, dst + l.width, T(0));
    if (l.down == 1) {
        std::copy(src, src + len, dst + l.lead);
        return;
    }
    if (l.down == 2) {  // every StyleGAN3 downsampling: one pass that the compiler turns into a deinterleave
        T* even = dst + l.lead;
        T* odd = dst + l.phase_len + l.lead;
        for (int j = 0; j < len / 2; ++j) {
            even[j] = src[2 * j];
            odd[j] = src[2 * j + 1];
        }
        if (len % 2) even[len / 2] = src[len - 1];
        return;
    }
    for (int p = 0; p < l.down; ++p) {
        T* phase = dst + (int64_t)p * l.phase_len + l.lead;
        for (int i = p, j = 0; i < len; i += l.down, ++j) phase[j] = src[i];
    }
}

// acc += one laid-out row resampled along x by `taps` (fw correlation taps). Downsampling: acc is
// the output row. Upsampling: output column q * up + phase only meets taps of one residue class,
// at input column q + shift, so acc holds the `up` output phases of pw values each (see interleave).
template <typename T>
void add_row_x(const Axis& ax, const T* taps, int fw, const T* row, const RowLayout& l, T* acc, int pw) {
    if (ax.up == 1) {
        for (int p = 0; p < ax.down && p < fw; ++p) {
            // Taps tx = t0, t0 + down, ... read input phase (t0 - pad) mod down, shifted by one each.
            const int t0 = p, shift = t0 - ax.pad0;
            const int phase = ((shift % ax.down) + ax.down) % ax.down;
            const T* base = row + (int64_t)phase * l.phase_len + l.lead + floor_div(shift, ax.down);
            add_taps(acc, ax.out_len, base, 1, taps + t0, ax.down, (fw - t0 + ax.down - 1) / ax.down);
        }
    } else {
        for (int phase = 0; phase < ax.up; ++phase) {
            const int t0 = ((ax.pad0 - phase) % ax.up + ax.up) % ax.up;
            if (t0 >= fw) continue;
            const int n_out = (ax.out_len - phase + ax.up - 1) / ax.up;
            const T* base = row + l.lead + floor_div(phase - ax.pad0 + t0, ax.up);
            add_taps(acc + (int64_t)phase * pw, n_out, base, 1, taps + t0, ax.up, (fw - t0 + ax.up - 1) / ax.up);
        }
    }
}

template <typename T>
void interleave_phases(const T* phases, int pw, int up, T* row, int len) {
    for (int phase = 0; phase < up; ++phase)
        for (int q = 0, o = phase; o < len; ++q, o += up) row[o] = phases[(int64_t)phase * pw + q];
}

// Resample along x, row by row: row updates when the axis only up- or only downsamples, else one
// dot product of phase-grouped taps per kept output.
template <typename T, typename Epi>
void pass_x(const Stage<T>& s, const T* in, int rows, T* out, const Epi& epi, Scratch<T>& sc, int64_t out_stride) {
    const Axis& ax = s.x;
    const int iw = ax.in_len, ow = ax.out_len, pw = (ow + ax.up - 1) / ax.up;
    const bool vectorise = rows_vectorise(ax);
    RowLayout l = row_layout(ax);
    T* laid = vectorise ? sized(sc.rows, l.width) : nullptr;
    T* phases = vectorise && ax.up > 1 ? sized(sc.phases, (int64_t)ax.up * pw) : nullptr;
    for (int r = 0; r < rows; ++r) {
        const T* src = in + (int64_t)r * iw;
        T* dst = out + r * out_stride;
        if (vectorise) {
            lay_out_row(src, iw, l, laid);
            T* acc = phases ? phases : dst;
            std::fill(acc, acc + (phases ? (int64_t)ax.up * pw : ow), T(0));
            add_row_x(ax, s.f.data(), s.fw, laid, l, acc, pw);
            if (phases) interleave_phases(phases, pw, ax.up, dst, ow);
        } else {
            for (int o = 0; o < ow; ++o) {
                const TapRange& tr = ax.ranges[o];
                const T* fp = s.x_taps(tr);
                const T* xp = src + tr.i0;
                T acc = 0;
                for (int k = 0; k < tr.n; ++k) acc += fp[k] * xp[k];
                dst[o] = acc;
            }
        }
        epi(dst, r, ow);
    }
}

// Non-separable filter, general case: one dot product per kept output.
template <typename T, typename Epi>
void direct_2d_scalar(const Stage<T>& s, const T* in, T* out, const Epi& epi, int64_t out_stride) {
    const int iw = s.x.in_len, ow = s.x.out_len, upx = s.x.up;
    for (int oy = 0; oy < s.y.out_len; ++oy) {
        const TapRange& ry = s.y.ranges[oy];
        T* dst = out + oy * out_stride;
        for (int ox = 0; ox < ow; ++ox) {
            const TapRange& rx = s.x.ranges[ox];
            T acc = 0;
            for (int ky = 0; ky < ry.n; ++ky) {
                const T* frow = s.f.data() + (int64_t)(ry.t0 + ky * s.y.up) * s.fw + rx.t0;
                const T* src = in + (int64_t)(ry.i0 + ky) * iw + rx.i0;
                for (int kx = 0; kx < rx.n; ++kx) acc += frow[kx * upx] * src[kx];
            }
            dst[ox] = acc;
        }
        epi(dst, oy, ow);
    }
}

// Non-separable filter whose x axis only up- or only downsamples (StyleGAN3-R's radial down filter
// and its transpose in the backward): every input row is laid out once, then each output row adds
// the x-resampled contributions of the tap rows that reach it.
template <typename T, typename Epi>
void direct_2d_rows(const Stage<T>& s, const T* in, T* out, const Epi& epi, Scratch<T>& sc, int64_t out_stride) {
    const Axis& ax = s.x;
    const int ih = s.y.in_len, iw = ax.in_len, ow = ax.out_len, pw = (ow + ax.up - 1) / ax.up;
    RowLayout l = row_layout(ax);
    T* rows = sized(sc.rows, (int64_t)ih * l.width);
    for (int r = 0; r < ih; ++r) lay_out_row(in + (int64_t)r * iw, iw, l, rows + (int64_t)r * l.width);
    T* phases = ax.up > 1 ? sized(sc.phases, (int64_t)ax.up * pw) : nullptr;
    for (int oy = 0; oy < s.y.out_len; ++oy) {
        const TapRange& ry = s.y.ranges[oy];
        T* dst = out + oy * out_stride;
        T* acc = phases ? phases : dst;
        std::fill(acc, acc + (phases ? (int64_t)ax.up * pw : ow), T(0));
        for (int ky = 0; ky < ry.n; ++ky) {
            const T* frow = s.f.data() + (int64_t)(ry.t0 + ky * s.y.up) * s.fw;
            add_row_x(ax, frow, s.fw, rows + (int64_t)(ry.i0 + ky) * l.width, l, acc, pw);
        }
        if (phases) interleave_phases(phases, pw, ax.up, dst, ow);
        epi(dst, oy, ow);
    }
}

// One plane through one stage: bias is added to every input sample (not to the zero padding), epi
// runs on each output row (see pass_rows for out_stride; -1: the output's row length).
template <typename T, typename Epi>
void run_stage(const Stage<T>& s, const T* in, T* out, T bias, Scratch<T>& sc, const Epi& epi,
               int64_t out_stride = -1) {
    if (out_stride < 0) out_stride = s.x.out_len;
    const int64_t in_plane = (int64_t)s.y.in_len * s.x.in_len;
    if (bias != T(0)) {
        T* biased = sized(sc.biased, in_plane);
        for (int64_t i = 0; i < in_plane; ++i) biased[i] = in[i] + bias;
        in = biased;
    }
    if (!s.separable) {
        if (rows_vectorise(s.x))
            direct_2d_rows(s, in, out, epi, sc, out_stride);
        else
            direct_2d_scalar(s, in, out, epi, out_stride);
    } else if (s.y_first) {
        T* mid = sized(sc.mid, (int64_t)s.y.out_len * s.x.in_len);
        pass_rows(s.y, s.f.data(), in, s.x.in_len, mid, NoEpilogue{}, s.x.in_len);
        pass_x(s, mid, s.y.out_len, out, epi, sc, out_stride);
    } else {
        T* mid = sized(sc.mid, (int64_t)s.y.in_len * s.x.out_len);
        pass_x(s, in, s.y.in_len, mid, NoEpilogue{}, sc, s.x.out_len);
        pass_rows(s.y, s.f.data(), mid, s.x.out_len, out, epi, out_stride);
    }
}

// filtered_lrelu's second stage (and its backward's), fed the first stage's output rows in order as that
// stage's epilogue produces them. It keeps only the rows its taps still need, in a ring (laid-out rows for
// a 2-D filter; rows already resampled along x for a separable one, stored twice so that any run of them
// is contiguous), and writes each output row once its inputs are in: the upsampled plane, several times
// the cache at 1024 px, is never written out whole nor read back. Both second stages have up = 1. Output
// rows are stored as O (bfloat16 under bf16 autocast), computed in T.
template <typename T, typename O = T>
struct StreamedStage {
    const Stage<T>& s;
    O* out;
    Scratch<T> sc;  // its own: the first stage is using the caller's
    RowLayout l;
    int ring = 1, width, next = 0;
    T* rows;

    explicit StreamedStage(const Stage<T>& stage) : s(stage), out(nullptr), l(row_layout(stage.x)) {
        TORCH_CHECK(s.x.up == 1 && s.y.up == 1, "filtered_lrelu: a streamed stage cannot upsample");
        for (const TapRange& r : s.y.ranges) ring = std::max(ring, r.n);
        width = s.separable ? s.x.out_len : l.width;
        rows = sized(sc.ring, (int64_t)2 * ring * width);
    }

    void start(O* out_plane) {
        out = out_plane;
        next = 0;
    }

    T* slot(int r) { return rows + (int64_t)(r % ring) * width; }

    void push(const T* row, int r) {
        T* dst = slot(r);
        if (s.separable) {
            pass_x(s, row, 1, dst, NoEpilogue{}, sc, width);
            std::copy(dst, dst + width, dst + (int64_t)ring * width);
        } else {
            lay_out_row(row, s.x.in_len, l, dst);
        }
        while (next < s.y.out_len && s.y.ranges[next].i0 + s.y.ranges[next].n - 1 <= r) emit(next++);
    }

    void finish() {
        while (next < s.y.out_len) emit(next++);
    }

    void emit(int oy) {
        const TapRange& ry = s.y.ranges[oy];
        const int ow = s.x.out_len;
        O* row = out + (int64_t)oy * ow;
        T* dst;
        if constexpr (std::is_same_v<O, T>) dst = row;
        else dst = sized(sc.mid, ow);
        std::fill(dst, dst + ow, T(0));
        if (s.separable) {
            if (ry.n > 0) add_taps(dst, ow, slot(ry.i0), width, s.f.data() + ry.t0, 1, ry.n);
        } else {
            for (int ky = 0; ky < ry.n; ++ky)
                add_row_x(s.x, s.f.data() + (int64_t)(ry.t0 + ky) * s.fw, s.fw, slot(ry.i0 + ky), l, dst, ow);
        }
        if constexpr (!std::is_same_v<O, T>) std::copy(dst, dst + ow, row);
    }
};

// The CPU build keeps codes at two bits, four to a byte along each upsampled row: a backward pass that
// keeps every layer's codes (no activation checkpointing) holds a quarter of the bytes.
inline int packed_width(int width) { return (width + 3) / 4; }

inline void pack_codes(const uint8_t* codes, int width, uint8_t* packed) {
    const int whole = width / 4;
    for (int q = 0; q < whole; ++q) {
        const uint8_t* c = codes + 4 * q;
        packed[q] = uint8_t(c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6);
    }
    if (whole * 4 < width) {
        uint8_t byte = 0;
        for (int i = whole * 4; i < width; ++i) byte |= uint8_t(codes[i] << (2 * (i - whole * 4)));
        packed[whole] = byte;
    }
}

inline void unpack_codes(const uint8_t* packed, int width, uint8_t* codes) {
    for (int i = 0; i < width; ++i) codes[i] = (packed[i >> 2] >> ((i & 3) * 2)) & 3;
}

// lrelu_forward over a row, keeping each sample's code when `codes` is given: the same arithmetic,
// branch-free so that the loops vectorise.
template <typename T>
void lrelu_row(T* row, int n, T gain, T slope, T clamp, uint8_t* codes) {
    for (int i = 0; i < n; ++i) {
        const T v = row[i];
        row[i] = (v > T(0) ? v : v * slope) * gain;
        if (codes) codes[i] = v > T(0) ? kPositive : kNegative;
    }
    if (clamp < T(0)) return;
    for (int i = 0; i < n; ++i) {
        const T y = row[i];
        if (codes) codes[i] = (y < -clamp || y > clamp) ? uint8_t(kClamped) : codes[i];
        row[i] = std::min(std::max(y, -clamp), clamp);
    }
}

// The backward's chain rule through the saved codes: row *= lrelu_grad(code), branch-free.
template <typename T>
void lrelu_grad_row(T* row, int n, const uint8_t* codes, T positive, T negative) {
    for (int i = 0; i < n; ++i)
        row[i] *= codes[i] == kPositive ? positive : (codes[i] == kNegative ? negative : T(0));
}

// One input plane in the compute type T: the tensor's own memory, or a converted copy for bfloat16.
template <typename T, typename S>
const T* plane_as(const S* src, int64_t n, std::vector<T>& buffer) {
    if constexpr (std::is_same_v<S, T>) {
        return src;
    } else {
        buffer.resize(n);
        for (int64_t i = 0; i < n; ++i) buffer[i] = T(src[i]);
        return buffer.data();
    }
}

void check_input(const torch::Tensor& x, const char* name) {
    TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(x.dim() == 4, name, " must be NCHW");
}

}  // namespace

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy, int px0, int px1,
                        int py0, int py1) {
    check_input(x, "x");
    x = x.contiguous();
    const int64_t planes = x.size(0) * x.size(1);
    const int ih = x.size(2), iw = x.size(3);
    torch::Tensor y;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_upfirdn2d", [&] {
        auto stage = make_stage<scalar_t>(f.to(x.scalar_type()), ih, iw, upx, upy, downx, downy, px0, px1, py0, py1);
        TORCH_CHECK(stage.x.out_len > 0 && stage.y.out_len > 0, "upfirdn2d output would be empty");
        y = torch::empty({x.size(0), x.size(1), stage.y.out_len, stage.x.out_len}, x.options());
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = y.data_ptr<scalar_t>();
        const int64_t in_plane = (int64_t)ih * iw, out_plane = (int64_t)stage.y.out_len * stage.x.out_len;
        at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
            Scratch<scalar_t> scratch;
            for (int64_t p = begin; p < end; ++p)
                run_stage(stage, src + p * in_plane, dst + p * out_plane, scalar_t(0), scratch, NoEpilogue{});
        });
    });
    return y;
}

// Returns (y, codes); codes (uint8 [N, C, upsampled rows, packed_width(upsampled cols)]) only when save_codes.
// bfloat16 x and y (PTI's bf16 autocast) are computed in float32, without casts of whole tensors around the call.
std::vector<torch::Tensor> filtered_lrelu_forward(torch::Tensor x, torch::Tensor fu, torch::Tensor fd, torch::Tensor b,
                                                  int up, int down, int px0, int px1, int py0, int py1, double gain,
                                                  double slope, double clamp, bool save_codes) {
    check_input(x, "x");
    x = x.contiguous();
    const int64_t channels = x.size(1), planes = x.size(0) * channels;
    const int ih = x.size(2), iw = x.size(3);
    torch::Tensor y, codes;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "sgtool_filtered_lrelu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
        auto up_stage = make_stage<acc_t>(fu.to(acc_type), ih, iw, up, up, 1, 1, px0, px1, py0, py1);
        const int th = up_stage.y.out_len, tw = up_stage.x.out_len;
        TORCH_CHECK(th > 0 && tw > 0, "filtered_lrelu output would be empty");
        auto down_stage = make_stage<acc_t>(fd.to(acc_type), th, tw, 1, 1, down, down, 0, 0, 0, 0);
        TORCH_CHECK(down_stage.x.out_len > 0 && down_stage.y.out_len > 0, "filtered_lrelu output would be empty");
        y = torch::empty({x.size(0), channels, down_stage.y.out_len, down_stage.x.out_len}, x.options());
        const int packed_tw = packed_width(tw);
        if (save_codes) codes = torch::empty({x.size(0), channels, th, packed_tw}, x.options().dtype(torch::kUInt8));
        auto bc = b.numel() ? b.to(acc_type).contiguous() : b;
        const acc_t* bias = b.numel() ? bc.data_ptr<acc_t>() : nullptr;
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = y.data_ptr<scalar_t>();
        uint8_t* code_ptr = save_codes ? codes.data_ptr<uint8_t>() : nullptr;
        const int64_t in_plane = (int64_t)ih * iw, code_plane = (int64_t)th * packed_tw;
        const int64_t out_plane = (int64_t)down_stage.y.out_len * down_stage.x.out_len;
        const acc_t g = gain, s = slope, c = clamp;
        at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
            std::vector<acc_t> row_buffer(tw), converted;
            std::vector<uint8_t> row_codes(save_codes ? tw : 0);
            Scratch<acc_t> scratch;
            StreamedStage<acc_t, scalar_t> down(down_stage);
            for (int64_t p = begin; p < end; ++p) {
                uint8_t* plane_codes = code_ptr ? code_ptr + p * code_plane : nullptr;
                down.start(dst + p * out_plane);
                auto activate = [&](acc_t* row, int r, int width) {
                    lrelu_row(row, width, g, s, c, plane_codes ? row_codes.data() : nullptr);
                    if (plane_codes) pack_codes(row_codes.data(), width, plane_codes + (int64_t)r * packed_tw);
                    down.push(row, r);
                };
                const acc_t bp = bias ? bias[p % channels] : acc_t(0);
                run_stage(up_stage, plane_as<acc_t>(src + p * in_plane, in_plane, converted), row_buffer.data(), bp,
                          scratch, activate, 0);
                down.finish();
            }
        });
    });
    return {y, codes};
}

// Gradient w.r.t. the input: the transposed down stage, the saved nonlinearity slope, the transposed
// up stage. fu_t/fd_t are the forward correlation taps reversed.
torch::Tensor filtered_lrelu_backward(torch::Tensor dy, torch::Tensor codes, torch::Tensor fu_t, torch::Tensor fd_t,
                                      int up, int down, int px0, int px1, int py0, int py1, int in_h, int in_w,
                                      double gain, double slope) {
    check_input(dy, "dy");
    dy = dy.contiguous();
    codes = codes.contiguous();
    const int64_t planes = dy.size(0) * dy.size(1);
    const int fuw = fu_t.dim() == 1 ? fu_t.size(0) : fu_t.size(1), fuh = fu_t.size(0);
    const int oh = dy.size(2), ow = dy.size(3), th = codes.size(2),
              tw = upfirdn_out_len(in_w, up, 1, px0, px1, fuw);
    TORCH_CHECK(codes.size(3) == packed_width(tw), "filtered_lrelu backward: codes do not match the input size");
    const int fdw = fd_t.dim() == 1 ? fd_t.size(0) : fd_t.size(1), fdh = fd_t.size(0);
    torch::Tensor dx;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dy.scalar_type(), "sgtool_filtered_lrelu_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
        auto down_t = make_stage<acc_t>(fd_t.to(acc_type), oh, ow, down, down, 1, 1, fdw - 1,
                                           tw - ow * down, fdh - 1, th - oh * down);
        auto up_t = make_stage<acc_t>(fu_t.to(acc_type), th, tw, 1, 1, up, up, fuw - px0 - 1,
                                         in_w * up - tw + px0 - up + 1, fuh - py0 - 1, in_h * up - th + py0 - up + 1);
        TORCH_CHECK(down_t.x.out_len == tw && down_t.y.out_len == th && up_t.x.out_len == in_w &&
                        up_t.y.out_len == in_h, "filtered_lrelu backward: inconsistent shapes");
        dx = torch::empty({dy.size(0), dy.size(1), in_h, in_w}, dy.options());
        const scalar_t* src = dy.data_ptr<scalar_t>();
        const uint8_t* code_ptr = codes.data_ptr<uint8_t>();
        scalar_t* dst = dx.data_ptr<scalar_t>();
        const int64_t out_plane = (int64_t)oh * ow, in_plane = (int64_t)in_h * in_w;
        const int packed_tw = packed_width(tw);
        const int64_t code_plane = (int64_t)th * packed_tw;
        const acc_t g = gain, s = slope;
        const acc_t grad_positive = lrelu_grad(kPositive, g, s), grad_negative = lrelu_grad(kNegative, g, s);
        at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
            std::vector<acc_t> row_buffer(tw), converted;
            std::vector<uint8_t> row_codes(tw);
            Scratch<acc_t> scratch;
            StreamedStage<acc_t, scalar_t> up_stream(up_t);
            for (int64_t p = begin; p < end; ++p) {
                const uint8_t* plane_codes = code_ptr + p * code_plane;
                up_stream.start(dst + p * in_plane);
                auto chain = [&](acc_t* row, int r, int width) {
                    unpack_codes(plane_codes + (int64_t)r * packed_tw, width, row_codes.data());
                    lrelu_grad_row(row, width, row_codes.data(), grad_positive, grad_negative);
                    up_stream.push(row, r);
                };
                run_stage(down_t, plane_as<acc_t>(src + p * out_plane, out_plane, converted), row_buffer.data(),
                          acc_t(0), scratch, chain, 0);
                up_stream.finish();
            }
        });
    });
    return dx;
}

// Calls fn with the activation as a compile-time constant, so the per-element switch folds away
// and the row loops vectorise.
template <typename Fn>
void with_activation(int act, Fn&& fn) {
    switch (act) {
        case kLinear: return fn(std::integral_constant<int, kLinear>());
        case kRelu: return fn(std::integral_constant<int, kRelu>());
        case kLrelu: return fn(std::integral_constant<int, kLrelu>());
        case kTanh: return fn(std::integral_constant<int, kTanh>());
        case kSigmoid: return fn(std::integral_constant<int, kSigmoid>());
        case kElu: return fn(std::integral_constant<int, kElu>());
        case kSelu: return fn(std::integral_constant<int, kSelu>());
        case kSoftplus: return fn(std::integral_constant<int, kSoftplus>());
        case kSwish: return fn(std::integral_constant<int, kSwish>());
        default: TORCH_CHECK(false, "unknown activation index ", act);
    }
}

// x viewed as rows of `inner` elements, row r being channel r % channels (b has `channels` entries
// or none): fn(row, the row's bias) for every row, in parallel.
template <typename scalar_t, typename Fn>
void for_each_bias_row(int64_t numel, int64_t inner, const scalar_t* bias, int64_t channels, Fn&& fn) {
    const int64_t rows = inner > 0 ? numel / inner : 0;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) fn(r, bias ? bias[r % channels] : scalar_t(0));
    });
}

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t inner, int act, double alpha, double gain,
                               double clamp) {
    TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor");
    x = x.contiguous();
    auto y = torch::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_bias_act", [&] {
        auto bc = b.numel() ? b.to(x.scalar_type()).contiguous() : b;
        const scalar_t* bias = b.numel() ? bc.data_ptr<scalar_t>() : nullptr;
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = y.data_ptr<scalar_t>();
        const scalar_t a = alpha, g = gain, c = clamp;
        with_activation(act, [&](auto kind) {
            constexpr int A = decltype(kind)::value;
            for_each_bias_row(x.numel(), inner, bias, b.numel(), [&](int64_t r, scalar_t shift) {
                const scalar_t* s = src + r * inner;
                scalar_t* d = dst + r * inner;
                if (bias) {
                    for (int64_t i = 0; i < inner; ++i) d[i] = bias_act_value(A, s[i] + shift, a, g, c);
                } else {
                    for (int64_t i = 0; i < inner; ++i) d[i] = bias_act_value(A, s[i], a, g, c);
                }
            });
        });
    });
    return y;
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t inner, int act,
                                double alpha, double gain, double clamp) {
    dy = dy.contiguous();
    x = x.contiguous();
    auto dx = torch::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_bias_act_backward", [&] {
        auto bc = b.numel() ? b.to(x.scalar_type()).contiguous() : b;
        const scalar_t* bias = b.numel() ? bc.data_ptr<scalar_t>() : nullptr;
        const scalar_t* src = x.data_ptr<scalar_t>();
        const scalar_t* grad = dy.data_ptr<scalar_t>();
        scalar_t* dst = dx.data_ptr<scalar_t>();
        const scalar_t a = alpha, g = gain, c = clamp;
        with_activation(act, [&](auto kind) {
            constexpr int A = decltype(kind)::value;
            for_each_bias_row(x.numel(), inner, bias, b.numel(), [&](int64_t r, scalar_t shift) {
                const scalar_t* s = src + r * inner;
                const scalar_t* gr = grad + r * inner;
                scalar_t* d = dst + r * inner;
                if (bias) {
                    for (int64_t i = 0; i < inner; ++i) d[i] = gr[i] * bias_act_grad(A, s[i] + shift, a, g, c);
                } else {
                    for (int64_t i = 0; i < inner; ++i) d[i] = gr[i] * bias_act_grad(A, s[i], a, g, c);
                }
            });
        });
    });
    return dx;
}

}  // namespace sgtool

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &sgtool::upfirdn2d);
    m.def("filtered_lrelu_forward", &sgtool::filtered_lrelu_forward);
    m.def("filtered_lrelu_backward", &sgtool::filtered_lrelu_backward);
    m.def("bias_act_forward", &sgtool::bias_act_forward);
    m.def("bias_act_backward", &sgtool::bias_act_backward);
}
