"""`sgtool train-encoder`: train an e4e / pSp / ReStyle / HyperStyle encoder (also under torchrun)."""

from __future__ import annotations

from ..settings import TrainEncoderSettings
from .common import reporting, resolve_checkpoints
from .options import Run, command


@command(TrainEncoderSettings, "train-encoder", after_load=resolve_checkpoints)
def train_encoder(settings: TrainEncoderSettings, run: Run):
    """Train an encoder for a generator: ReStyle-pSp/e4e, pSp, e4e, HyperStyle or SFE, on aligned images or --synthetic.

    On several processes or GPUs: torchrun --nproc-per-node N -m sgtool train-encoder ...

    After a stop: sgtool train-encoder --resume RUN. The result: sgtool invert --encoder RUN/best.pt
    """
    from ..pipelines.train_encoder import train_encoder as run_training

    with reporting(run.json, transient=False) as reporter:
        summary = run_training(settings, given=run.given, reporter=reporter)
    if summary is None:  # another process of a torchrun job: the main one reports
        return
    best = f"best {summary['best_val_loss']:.4f}" if summary["best_val_loss"] is not None else "no validation"
    run.report(summary, f"{summary['outdir']}: {summary['steps']} steps ({summary['world_size']} process(es)), "
                        f"{best}; encoder {summary['best']}")
