"""Encoder training (e4e / pSp / ReStyle / HyperStyle) for any StyleGAN2/3 generator, one process or torchrun.

    from sgtool.pipelines.train_encoder import train_encoder
    from sgtool.settings import TrainEncoderSettings
    summary = train_encoder(TrainEncoderSettings(network="G.pkl", synthetic=True, arch="e4e", outdir="runs/x"))
"""

from .records import find_runs
from .run import train_encoder

__all__ = ["find_runs", "train_encoder"]
