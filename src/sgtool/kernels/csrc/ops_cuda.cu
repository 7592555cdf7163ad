// CUDA kernels: one thread per kept output sample, visiting only the taps that meet nonzero
// (non-inserted) inputs. filtered_lrelu runs as two such stages with the nonlinearity (and the
// one-byte record its backward needs) fused into the first. Same entry points as ops_cpu.cpp.
#include <torch/extension.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "sgtool_ops.h"

namespace sgtool {
namespace {

enum Epilogue : int { kNone = 0, kLreluForward = 1, kLreluBackward = 2 };

struct StageParams {
    int ih, iw, oh, ow;
    int upx, upy, downx, downy, px0, py0;
    int fw, fh;
    bool separable;
    int64_t planes;
    int64_t channels;
};

template <typename T>
__global__ void stage_kernel(const T* __restrict__ in, T* __restrict__ out, const T* __restrict__ f,
                             const T* __restrict__ bias, uint8_t* __restrict__ codes_out,
                             const uint8_t* __restrict__ codes_in, StageParams p, T gain, T slope, T clamp,
                             int epilogue) {
    const int64_t total = p.planes * p.oh * p.ow;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int ox = idx % p.ow;
        const int oy = (idx / p.ow) % p.oh;
        const int64_t plane = idx / ((int64_t)p.ow * p.oh);
        const TapRange rx = tap_range(ox, p.upx, p.downx, p.px0, p.fw, p.iw);
        const TapRange ry = tap_range(oy, p.upy, p.downy, p.py0, p.fh, p.ih);
        const T b = bias ? bias[plane % p.channels] : T(0);
        const T* src = in + plane * p.ih * p.iw;
        T acc = 0;
        for (int ky = 0; ky < ry.n; ++ky) {
            const int ty = ry.t0 + ky * p.upy;
            const T* row = src + (int64_t)(ry.i0 + ky) * p.iw + rx.i0;
            for (int kx = 0; kx < rx.n; ++kx) {
                const int tx = rx.t0 + kx * p.upx;
                const T w = p.separable ? f[ty] * f[tx] : f[ty * p.fw + tx];
                acc += w * (row[kx] + b);
            }
        }
        if (epilogue == kLreluForward) {
            uint8_t code;
            acc = lrelu_forward(acc, gain, slope, clamp, &code);
            if (codes_out) codes_out[idx] = code;
        } else if (epilogue == kLreluBackward) {
            acc *= lrelu_grad(codes_in[idx], gain, slope);
        }
        out[idx] = acc;
    }
}

template <typename T>
__global__ void bias_act_kernel(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ bias,
                                T* __restrict__ out, int64_t n, int64_t inner, int64_t channels, int act, T alpha,
                                T gain, T clamp) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const T v = bias ? x[i] + bias[(i / inner) % channels] : x[i];
        out[i] = dy ? dy[i] * bias_act_grad(act, v, alpha, gain, clamp) : bias_act_value(act, v, alpha, gain, clamp);
    }
}

int filter_w(const torch::Tensor& f) { return f.dim() == 1 ? f.size(0) : f.size(1); }

StageParams make_params(const torch::Tensor& f, int64_t planes, int64_t channels, int ih, int iw, int upx, int upy,
                        int downx, int downy, int px0, int px1, int py0, int py1) {
    TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filter must be 1-D or 2-D");
    StageParams p;
    p.ih = ih;
    p.iw = iw;
    p.fw = filter_w(f);
    p.fh = f.size(0);
    p.separable = f.dim() == 1;
    p.upx = upx;
    p.upy = upy;
    p.downx = downx;
    p.downy = downy;
    p.px0 = px0;
    p.py0 = py0;
    p.ow = upfirdn_out_len(iw, upx, downx, px0, px1, p.fw);
    p.oh = upfirdn_out_len(ih, upy, downy, py0, py1, p.fh);
    p.planes = planes;
    p.channels = channels;
    TORCH_CHECK(p.ow > 0 && p.oh > 0, "resampling output would be empty");
    return p;
}

unsigned blocks_for(int64_t n) { return (unsigned)std::min<int64_t>((n + 255) / 256, 65535); }

template <typename T>
void launch_stage(const torch::Tensor& in, torch::Tensor& out, const torch::Tensor& f, const T* bias,
                  uint8_t* codes_out, const uint8_t* codes_in, const StageParams& p, double gain, double slope,
                  double clamp, int epilogue) {
    const int64_t total = p.planes * p.oh * p.ow;
    auto stream = at::cuda::getCurrentCUDAStream();
    stage_kernel<T><<<blocks_for(total), 256, 0, stream>>>(in.data_ptr<T>(), out.data_ptr<T>(), f.data_ptr<T>(),
                                                            bias, codes_out, codes_in, p, T(gain), T(slope),
                                                            T(clamp), epilogue);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_input(const torch::Tensor& x, const char* name) {
    TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, name, " must be NCHW");
}

}  // namespace

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy, int px0, int px1,
                        int py0, int py1) {
    check_input(x, "x");
    const at::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    f = f.to(x.scalar_type()).contiguous();
    auto p = make_params(f, x.size(0) * x.size(1), x.size(1), x.size(2), x.size(3), upx, upy, downx, downy, px0, px1,
                         py0, py1);
    auto y = torch::empty({x.size(0), x.size(1), p.oh, p.ow}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_upfirdn2d_cuda", [&] {
        launch_stage<scalar_t>(x, y, f, nullptr, nullptr, nullptr, p, 1.0, 1.0, -1.0, kNone);
    });
    return y;
}

std::vector<torch::Tensor> filtered_lrelu_forward(torch::Tensor x, torch::Tensor fu, torch::Tensor fd, torch::Tensor b,
                                                  int up, int down, int px0, int px1, int py0, int py1, double gain,
                                                  double slope, double clamp, bool save_codes) {
    check_input(x, "x");
    const at::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    fu = fu.to(x.scalar_type()).contiguous();
    fd = fd.to(x.scalar_type()).contiguous();
    const int64_t planes = x.size(0) * x.size(1);
    auto up_p = make_params(fu, planes, x.size(1), x.size(2), x.size(3), up, up, 1, 1, px0, px1, py0, py1);
    auto down_p = make_params(fd, planes, x.size(1), up_p.oh, up_p.ow, 1, 1, down, down, 0, 0, 0, 0);
    auto tmp = torch::empty({x.size(0), x.size(1), up_p.oh, up_p.ow}, x.options());
    auto y = torch::empty({x.size(0), x.size(1), down_p.oh, down_p.ow}, x.options());
    torch::Tensor codes;
    if (save_codes) codes = torch::empty(tmp.sizes(), x.options().dtype(torch::kUInt8));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_filtered_lrelu_cuda", [&] {
        auto bc = b.numel() ? b.to(x.scalar_type()).contiguous() : b;
        const scalar_t* bias = b.numel() ? bc.data_ptr<scalar_t>() : nullptr;
        launch_stage<scalar_t>(x, tmp, fu, bias, save_codes ? codes.data_ptr<uint8_t>() : nullptr, nullptr, up_p,
                               gain, slope, clamp, kLreluForward);
        launch_stage<scalar_t>(tmp, y, fd, nullptr, nullptr, nullptr, down_p, 1.0, 1.0, -1.0, kNone);
    });
    return {y, codes};
}

torch::Tensor filtered_lrelu_backward(torch::Tensor dy, torch::Tensor codes, torch::Tensor fu_t, torch::Tensor fd_t,
                                      int up, int down, int px0, int px1, int py0, int py1, int in_h, int in_w,
                                      double gain, double slope) {
    check_input(dy, "dy");
    const at::cuda::CUDAGuard guard(dy.device());
    dy = dy.contiguous();
    codes = codes.contiguous();
    fu_t = fu_t.to(dy.scalar_type()).contiguous();
    fd_t = fd_t.to(dy.scalar_type()).contiguous();
    const int64_t planes = dy.size(0) * dy.size(1);
    const int oh = dy.size(2), ow = dy.size(3), th = codes.size(2), tw = codes.size(3);
    const int fuw = filter_w(fu_t), fuh = fu_t.size(0), fdw = filter_w(fd_t), fdh = fd_t.size(0);
    auto down_p = make_params(fd_t, planes, dy.size(1), oh, ow, down, down, 1, 1, fdw - 1, tw - ow * down, fdh - 1,
                              th - oh * down);
    auto up_p = make_params(fu_t, planes, dy.size(1), th, tw, 1, 1, up, up, fuw - px0 - 1,
                            in_w * up - tw + px0 - up + 1, fuh - py0 - 1, in_h * up - th + py0 - up + 1);
    TORCH_CHECK(down_p.ow == tw && down_p.oh == th && up_p.ow == in_w && up_p.oh == in_h,
                "filtered_lrelu backward: inconsistent shapes");
    auto tmp = torch::empty({dy.size(0), dy.size(1), th, tw}, dy.options());
    auto dx = torch::empty({dy.size(0), dy.size(1), in_h, in_w}, dy.options());
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "sgtool_filtered_lrelu_backward_cuda", [&] {
        launch_stage<scalar_t>(dy, tmp, fd_t, nullptr, nullptr, codes.data_ptr<uint8_t>(), down_p, gain, slope, -1.0,
                               kLreluBackward);
        launch_stage<scalar_t>(tmp, dx, fu_t, nullptr, nullptr, nullptr, up_p, 1.0, 1.0, -1.0, kNone);
    });
    return dx;
}

namespace {
torch::Tensor bias_act_run(const torch::Tensor& dy, torch::Tensor x, const torch::Tensor& b, int64_t inner, int act,
                           double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor");
    const at::cuda::CUDAGuard guard(x.device());
    x = x.contiguous();
    auto g = dy.defined() ? dy.contiguous() : dy;
    auto out = torch::empty_like(x);
    const int64_t n = x.numel();
    if (n == 0) return out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sgtool_bias_act_cuda", [&] {
        auto bc = b.numel() ? b.to(x.scalar_type()).contiguous() : b;
        const scalar_t* bias = b.numel() ? bc.data_ptr<scalar_t>() : nullptr;
        auto stream = at::cuda::getCurrentCUDAStream();
        bias_act_kernel<scalar_t><<<blocks_for(n), 256, 0, stream>>>(
            x.data_ptr<scalar_t>(), g.defined() ? g.data_ptr<scalar_t>() : nullptr, bias, out.data_ptr<scalar_t>(), n,
            inner, std::max<int64_t>(b.numel(), 1), act, scalar_t(alpha), scalar_t(gain), scalar_t(clamp));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return out;
}
}  // namespace

torch::Tensor bias_act_forward(torch::Tensor x, torch::Tensor b, int64_t inner, int act, double alpha, double gain,
                               double clamp) {
    return bias_act_run(torch::Tensor(), x, b, inner, act, alpha, gain, clamp);
}

torch::Tensor bias_act_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int64_t inner, int act,
                                double alpha, double gain, double clamp) {
    return bias_act_run(dy, x, b, inner, act, alpha, gain, clamp);
}

}  // namespace sgtool

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &sgtool::upfirdn2d);
    m.def("filtered_lrelu_forward", &sgtool::filtered_lrelu_forward);
    m.def("filtered_lrelu_backward", &sgtool::filtered_lrelu_backward);
    m.def("bias_act_forward", &sgtool::bias_act_forward);
    m.def("bias_act_backward", &sgtool::bias_act_backward);
}
