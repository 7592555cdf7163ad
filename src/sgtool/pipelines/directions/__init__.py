"""`sgtool directions` as a library: find or build edit directions.

    run_sefa(SefaSettings(network="G.pkl", top=10, outdir="out/sefa"))                  # SeFa, no labels
    run_boundary("smile.csv", BoundarySettings(outdir="out/boundaries"))                # InterFaceGAN boundary
    run_styleclip(StyleclipDirectionsSettings(network="G.pkl", outdir="dirs/"))          # StyleCLIP's files

Modules: sefa, boundary, styleclip (each one subcommand).
"""

from .boundary import run_boundary, train_boundary_from_csv
from .sefa import discover_sefa, run_sefa
from .styleclip import BuildOptions, build_clip_directions, run_styleclip

__all__ = ["BuildOptions", "build_clip_directions", "discover_sefa", "run_boundary", "run_sefa", "run_styleclip",
           "train_boundary_from_csv"]
