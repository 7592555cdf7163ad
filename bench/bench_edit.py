"""Cost of editing on top of plain synthesis, on the golden 64 px generators (CPU, batch 4).

Reference: `G.synthesis(ws)` measured in the same run. Rows: a W edit + render (apply_edits is a
few vector ops), the StyleSpace path (one render that captures S, then one that substitutes the
edited S through forward hooks: about 2x the reference by construction), and SeFa's closed form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sgtool import kernels
from sgtool.editing import Edit, apply_edits, apply_style_edits, capture_styles, render_styles, sefa_directions
from sgtool.editing.stylespace import StyleEdit
from sgtool.models import load_generator
from sgtool.pipelines.shared.render import render
from timing import median_seconds

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "generators"
REPEATS = 3


def timeit(fn):
    return median_seconds(fn, REPEATS, warmup=True)


def main():
    torch.set_num_threads(2)
    kernels.set_backend("ref")  # the same ops for every row: the ratios then measure editing alone
    print(f"{'generator':<10} {'path':<28} {'median ms':>10} {'x synthesis':>12}")
    for name in ("sg3t_64", "sg3r_64", "sg2_64"):
        pkl = GOLDEN / f"{name}.pkl"
        if not pkl.exists():
            print(f"{name}: golden data not found at {pkl}; skipped")
            continue
        G = load_generator(pkl)
        ws = torch.from_numpy(np.load(GOLDEN / f"{name}_io.npz")["ws"])
        edits = [Edit("d", 2.0, np.random.RandomState(0).randn(1, G.w_dim).astype(np.float32))]
        style_edit = [StyleEdit("1", 0, 1.0, 1)]
        with torch.no_grad():
            reference = timeit(lambda: G.synthesis(ws, noise_mode="const"))
            rows = [
                ("G.synthesis (reference)", reference),
                ("W edit + render", timeit(lambda: render(G, apply_edits(ws, edits, layers=[0, 1, 2])))),
                ("StyleSpace capture+render", timeit(
                    lambda: render_styles(G, apply_style_edits(capture_styles(G, ws)[0], style_edit)))),
                ("SeFa top 10 (closed form)", timeit(lambda: sefa_directions(G, top=10))),
            ]
        for label, seconds in rows:
            print(f"{name:<10} {label:<28} {seconds * 1e3:>10.1f} {seconds / reference:>12.2f}")


if __name__ == "__main__":
    main()
