"""`sgtool tune` as a library: Pivotal Tuning Inversion.

    summary = tune_paths("photo.png", TuneSettings(network="G.pkl", latents="inv/photo_latent.npy"))
    result = tune_and_save(G, [TuneTarget(...)], PtiOptions(steps=350), "out/tuned")   # your own targets

Modules: run (photos and folders, pivots matched to images), pti (the tuning engine, checkpoints, loss curve).
"""

from ...settings import TuneSettings
from .pti import CHECKPOINT_NAME, PivotalTuner, TuneResult, TuneTarget, evaluate, tunable_parameters, tune_and_save
from .run import find_latent, match_targets, read_latents, tune_paths

__all__ = ["CHECKPOINT_NAME", "PivotalTuner", "TuneResult", "TuneSettings", "TuneTarget", "evaluate", "find_latent",
           "match_targets", "read_latents", "tunable_parameters", "tune_and_save", "tune_paths"]
