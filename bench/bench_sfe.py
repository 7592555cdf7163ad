"""Feature-space inversion (StyleFeatureEditor) against a W+ encoder and PTI: seconds per 1024 px photo.

Full-size random-weight networks, as the released files are shaped: StyleGAN2 config-f 1024 (rosinality's
layout), e4e (IR-SE50, 18 styles) and SFE's inverter + feature editor. Per photo (batch 1, the 256 px encoder
input given):
- W+ encoder: e4e, then the 1024 px render;
- SFE inversion: inverter (trunk, fuser; the generator to 64 px), editor with no change, render with F;
- SFE inversion + one edit: the above, the e4e's codes and their feature change under the edit (two renders to
  64 px), the editor again and the edited render;
- PTI: 350 steps (LPIPS + MSE, Adam on the generator) after the W+ encoder, from the median of timed steps.

Environment: SGTOOL_BENCH_REPEATS (default 3), SGTOOL_BENCH_PTI_STEPS (timed PTI steps, default 2).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from timing import median_seconds

PTI_STEPS = 350
CONFIG_F = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3, channel_base=32768,
                channel_max=512, mapping_kwargs={"num_layers": 8})


def main() -> None:
    from sgtool.losses import load_lpips
    from sgtool.models import build_generator
    from sgtool.models.encoders.sfe import FeatureStyleEditor, feature_delta
    from sgtool.models.encoders.sfe_layers import render_with_feature
    from sgtool.models.encoders.sg2_encoders import Encoder4Editing
    from sgtool.pipelines.tune import PivotalTuner, TuneSettings, TuneTarget

    repeats = int(os.environ.get("SGTOOL_BENCH_REPEATS", "3"))
    pti_steps = int(os.environ.get("SGTOOL_BENCH_PTI_STEPS", "2"))
    torch.manual_seed(0)
    G = build_generator("stylegan2", CONFIG_F).eval().requires_grad_(False)
    e4e = Encoder4Editing(G.num_ws, input_nc=3).eval().requires_grad_(False)
    sfe = FeatureStyleEditor().eval().requires_grad_(False)
    layer = sfe.layer(G)
    latent_avg = G.mapping.w_avg.detach()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    direction = torch.nn.functional.normalize(torch.randn(1, 512), dim=1) * 3

    @torch.no_grad()
    def w_encoder():
        return G.synthesis(e4e(x) + latent_avg, noise_mode="const")

    @torch.no_grad()
    def sfe_inversion():
        inversion = sfe.invert(x, G, latent_avg)
        return inversion, render_with_feature(G, inversion.w, sfe.edit_feature(inversion.fused), layer)

    @torch.no_grad()
    def sfe_edit():
        inversion, _ = sfe_inversion()
        codes = e4e(x) + latent_avg
        delta = feature_delta(G, layer, codes, codes + direction)
        return render_with_feature(G, inversion.w + direction, sfe.edit_feature(inversion.fused, delta), layer)

    print(f"torch threads: {torch.get_num_threads()}; 1024 px StyleGAN2 config-f, batch 1, random weights",
          flush=True)
    rows = [("W+ encoder (e4e)", median_seconds(w_encoder, repeats)),
            ("SFE inversion", median_seconds(sfe_inversion, repeats)),
            ("SFE inversion + 1 edit", median_seconds(sfe_edit, repeats))]
    with torch.no_grad():
        pivot = e4e(x) + latent_avg
    settings = TuneSettings(steps=10_000, lpips_threshold=0.0, lpips_random_backbone=True)
    tuner = PivotalTuner(G, [TuneTarget("bench", torch.rand(3, 1024, 1024) * 2 - 1, pivot[0])], settings,
                         lpips_model=load_lpips("alex", random_backbone=True))
    times = []
    for _ in range(pti_steps):
        start = time.perf_counter()
        tuner.step()
        times.append(time.perf_counter() - start)
    pti_step = statistics.median(times)
    rows.append((f"PTI {PTI_STEPS} steps (median of {pti_steps} x {PTI_STEPS})", rows[0][1] + pti_step * PTI_STEPS))
    header = f"{'per 1024 px photo':<44} {'seconds':>10} {'PTI / this':>11}"
    print(header)
    print("-" * len(header))
    for name, seconds in rows:
        print(f"{name:<44} {seconds:>10.2f} {rows[-1][1] / seconds:>10.1f}x", flush=True)


if __name__ == "__main__":
    main()
