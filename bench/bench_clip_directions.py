"""Seconds per S channel for building StyleCLIP directions (`sgtool directions styleclip`), CPU.

Per channel a build renders 2 x samples images (the channel at mean -/+ strength x std) and encodes them with
CLIP ViT-B/32 (random weights: the cost is the architecture's). Rows per generator: the batched pipeline
(`channel_features`, 16 images per render and CLIP pass) and the reference path measured in the same run, one
image per render and per CLIP call as stylegan3-editing's create_delta_i_c.py does. A few channels x samples
are timed (the two paths alternating, median of REPEATS); the table gives seconds per channel-sample, per
channel at 300 samples (the references' count) and the whole build. 64 px: the golden generators, 4 channels
x 2 samples; 1024 px: random StyleGAN3-R and StyleGAN2 config-F networks, 1 channel x 1 sample (the rest
estimated from that).

    python bench/run_all.py clip_directions
    SGTOOL_BENCH_CLIP_SIZES=64 python bench/bench_clip_directions.py     # skip the 1024 px rows
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from pathlib import Path

import torch

from sgtool.editing import stylespace
from sgtool.editing.clip_text import ClipEncoder, build_clip
from sgtool.models import build_generator, load_generator
from sgtool.pipelines.directions.styleclip import channel_features, direction_channels

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "generators"
REPEATS = 3
SAMPLES_PER_CHANNEL = 300
BATCH = 16
LARGE = {
    "stylegan3-r-1024": ("stylegan3", dict(channel_base=65536, channel_max=1024, conv_kernel=1,
                                           use_radial_filters=True, mapping_kwargs=dict(num_layers=2))),
    "stylegan2-f-1024": ("stylegan2", dict(channel_base=32768, channel_max=512, mapping_kwargs=dict(num_layers=8))),
}


def cases(sizes):
    if "64" in sizes:
        for name in ("sg3t_64", "sg2_64"):
            pkl = GOLDEN / f"{name}.pkl"
            if not pkl.exists():
                print(f"{name}: golden data not found at {pkl}; skipped")
                continue
            yield name, load_generator(pkl), 4, 2
    if "1024" in sizes:
        for name, (kind, kwargs) in LARGE.items():
            torch.manual_seed(0)
            init = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, **kwargs)
            yield name, build_generator(kind, init).eval(), 1, 1


def main():
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", message="No pretrained weights")
    sizes = os.environ.get("SGTOOL_BENCH_CLIP_SIZES", "64,1024").split(",")
    torch.manual_seed(0)
    clip = ClipEncoder(*build_clip("ViT-B-32"))
    clip.model.eval()
    print(f"CLIP ViT-B/32 (random weights), cpu, {torch.get_num_threads()} threads, median of {REPEATS}")
    print(f"{'generator':<18} {'path':<26} {'channels':>8} {'s/chan-sample':>14} "
          f"{'s/chan @300':>12} {'build h @300':>13} {'vs ref':>7}")
    for name, G, channels, samples in cases(sizes):
        stats = stylespace.s_statistics(G, 200)
        rows = direction_channels(G, stats)
        base = stylespace.w_to_s(G, torch.cat(list(stylespace.sample_ws(G, samples))))
        chosen = rows[:: max(1, len(rows) // channels)][:channels]
        paths = {f"pipeline (batch {BATCH})": BATCH, "reference (1 image/call)": 1}
        small = G.img_resolution <= 256
        if small:  # warm-up (kernel compilation, allocator)
            channel_features(G, clip, base, stats, chosen[:1], 5.0, BATCH)
        # The two paths alternate so that load from other jobs falls on both alike.
        times = {path: [] for path in paths}
        for _ in range(REPEATS):
            for path, batch in paths.items():
                start = time.perf_counter()
                channel_features(G, clip, base, stats, chosen, 5.0, batch)
                times[path].append(time.perf_counter() - start)
        timings = {path: statistics.median(values) for path, values in times.items()}
        reference = timings["reference (1 image/call)"]
        for path, seconds in timings.items():
            per_sample = seconds / (len(chosen) * samples)
            per_channel = per_sample * SAMPLES_PER_CHANNEL
            print(f"{name:<18} {path:<26} {len(rows):>8} {per_sample:>14.3f} {per_channel:>12.1f} "
                  f"{per_channel * len(rows) / 3600:>13.1f} {reference / seconds:>6.2f}x")


if __name__ == "__main__":
    main()
