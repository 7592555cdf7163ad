"""Checkpoints in the layouts the reference code reads, with sgtool's resume state beside them.

Every file holds `state_dict` ({encoder.* | hypernet.*} and decoder.*), `opts` (exactly the fields
of the reference's training options, so stylegan3-editing's dataclasses accept it), `latent_avg`,
`global_step` and `best_val_loss`; sgtool's own key `sgtool` holds the architecture (width,
input size, style_dim), the run's settings and the optimizer / discriminator / RNG states that
make --resume continue exactly. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import torch

from ...errors import CheckpointError, SgtoolError
from ...models.encoders.hyperstyle import generator_layers
from ...models.encoders.sfe import sfe_state
from ...models.formats import torch_load
from ...models.rosinality import export_rosinality
from ...settings import TrainEncoderSettings
from ...utils.io import atomic_path
from .image_tasks import run_task, task_record
from .sfe import editor_phase_steps
from .tasks import ENCODER_TYPES

FORMAT = 1
STEP_FILE = re.compile(r"step_(\d+)\.pt$")

_COMMON = dict(dataset_type="ffhq_encode", batch_size=8, test_batch_size=8, workers=4, test_workers=4,
               train_decoder=False, checkpoint_path=None, image_interval=100, board_interval=50,
               device="cuda:0")


def reference_opts(settings: TrainEncoderSettings, generator, network: str, w_encoder=None) -> dict:
    """The reference trainer's options for this run (its field names; sgtool's values)."""
    s = settings
    if s.arch == "sfe":  # SFE's training config (configs/fse_inverter_train.yaml and its editor phase) names
        return dict(exp_dir=str(s.outdir), method="fse_full", device="cuda:0", batch_size=s.batch_size,
                    workers=s.workers, steps=s.steps, editor_steps=editor_phase_steps(s), lr=s.lr,
                    optim_name=s.optimizer, l2_lambda=s.l2_weight, lpips_lambda=s.lpips_weight,
                    id_lambda=s.id_weight if s.id_loss == "arcface" else 0.0, feature_lambda=s.feature_weight,
                    stylegan_weights=network, e4e_path=str(s.w_encoder), output_size=int(generator.img_resolution))
    encoder_type = ENCODER_TYPES[(s.arch, s.encoder_backbone)]
    base = dict(_COMMON, exp_dir=str(s.outdir), encoder_type=encoder_type, batch_size=s.batch_size,
                workers=s.workers, learning_rate=s.lr, optim_name=s.optimizer, l2_lambda=s.l2_weight,
                lpips_lambda=s.lpips_weight, id_lambda=s.id_weight if s.id_loss == "arcface" else 0.0,
                stylegan_weights=network, max_steps=s.steps, val_interval=s.val_every, save_interval=s.save_every)
    moco = s.id_weight if s.id_loss == "moco" else 0.0
    e4e = dict(w_discriminator_lambda=s.w_discriminator_weight, w_discriminator_lr=s.w_discriminator_lr, r1=s.r1,
               d_reg_every=s.d_reg_every, use_w_pool=s.w_pool_size > 0, w_pool_size=s.w_pool_size,
               delta_norm=s.delta_norm, delta_norm_lambda=s.delta_norm_weight,
               progressive_steps=progressive_steps(s, generator.num_ws), progressive_start=s.progressive_start,
               progressive_step_every=s.progressive_step_every, save_training_data=False, sub_exp_dir=None,
               resume_training_from_ckpt=None, update_param_list=None)
    if s.arch.startswith("restyle"):
        opts = dict(base, input_nc=6, output_size=int(generator.img_resolution), n_iters_per_batch=s.encoder_steps,
                    start_from_latent_avg=True, w_norm_lambda=s.w_norm_weight, moco_lambda=moco,
                    max_val_batches=None)
        if s.arch == "restyle-e4e":
            opts.update(e4e, truncation_psi=1)
        return opts
    if s.arch == "psp":
        # pSp's dataset_type picks its inference transform, label_nc / input_nc what the encoder reads (translate
        # reads them too).
        task = run_task(s)
        return dict(base, dataset_type=task.dataset_type, input_nc=task.input_nc, label_nc=task.label_nc,
                    resize_factors=s.factors if s.task == "super-resolution" else None,
                    output_size=int(generator.img_resolution), start_from_latent_avg=True, learn_in_w=False,
                    w_norm_lambda=s.w_norm_weight, lpips_lambda_crop=0, l2_lambda_crop=0, moco_lambda=moco,
                    use_wandb=False, n_styles=generator.num_ws)
    if s.arch == "e4e":
        return dict(base, start_from_latent_avg=True, lpips_type="alex", stylegan_size=int(generator.img_resolution),
                    keep_optimizer=False, **e4e)
    return dict(base, dataset_type="ffhq_hypernet", input_nc=6, output_size=int(generator.img_resolution),
                moco_lambda=moco, max_val_batches=None, n_iters_per_batch=s.encoder_steps, load_w_encoder=True,
                w_encoder_checkpoint_path=str(s.w_encoder), w_encoder_type=type(w_encoder).__name__,
                layers_to_tune=s.layers_to_tune, n_hypernet_outputs=len(generator_layers(generator)))


def progressive_steps(settings: TrainEncoderSettings, num_ws: int) -> list[int] | None:
    if settings.progressive_start is None or settings.arch not in ("e4e", "restyle-e4e"):
        return None
    return [0] + [settings.progressive_start + i * settings.progressive_step_every for i in range(num_ws - 1)]


def decoder_state(generator) -> dict[str, torch.Tensor]:
    """StyleGAN2 in rosinality's layout (what e4e, pSp and HyperStyle read) when it can express the network,
    otherwise, and for StyleGAN3, NVIDIA's names (stylegan3-editing's decoder)."""
    if generator.kind == "stylegan2":
        try:
            state, _ = export_rosinality(generator)
            return state["g_ema"]
        except CheckpointError:
            pass
    return {k: v for k, v in generator.state_dict().items()}


def checkpoint_dict(task, settings: TrainEncoderSettings, generator, decoder: dict, network: str, step: int,
                    best: float | None, train_state: dict) -> dict:
    """`decoder`: `decoder_state(generator)`."""
    prefix = "hypernet" if settings.arch == "hyperstyle" else "encoder"
    if settings.arch == "sfe":  # SFE's own names: inverter.fs_backbone.*, inverter.fuser.*, encoder.* (editor)
        state = {k: v.detach().cpu() for k, v in sfe_state(task.encoder).items()}
    else:
        state = {f"{prefix}.{k}": v.detach().cpu() for k, v in task.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v.detach().cpu() for k, v in decoder.items()})
    opts = reference_opts(settings, generator, network, task.w_encoder)
    latent_avg = task.latent_avg.detach().cpu()
    if generator.kind == "stylegan3" and settings.arch.startswith("restyle"):
        latent_avg = latent_avg[0].clone()  # stylegan3-editing stores w_avg itself ([512])
    arch = dict(arch=settings.arch, backbone=settings.encoder_backbone, width=settings.width, input_size=settings.input_size,
                style_dim=int(generator.w_dim), n_styles=int(generator.num_ws), generator_kind=generator.kind)
    if settings.arch == "sfe":
        arch["sfe"] = asdict(task.encoder.config)
        latent_avg = latent_avg[0].clone()  # SFE adds the generator's w_avg ([w_dim])
    return {"state_dict": state, "opts": opts, "latent_avg": latent_avg.clone(), "global_step": step,
            "best_val_loss": best,
            "sgtool": {"format": FORMAT, "arch": arch, "settings": settings.model_dump(mode="json"),
                       **({"task": task_record(settings)} if settings.arch == "psp" else {}), "step": step,
                       **train_state}}


def save_checkpoint(data: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def step_checkpoints(run: Path) -> list[Path]:
    folder = Path(run) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def prune(run: Path, keep: int) -> None:
    for path in step_checkpoints(run)[:-keep]:
        path.unlink(missing_ok=True)


def read_resume_state(path: Path) -> dict:
    """The newest readable step checkpoint's full dict (a file cut short by a kill is skipped)."""
    for candidate in reversed(step_checkpoints(path)):
        try:
            data = torch_load(candidate)
        except Exception:  # a damaged newest file: fall back to the one before
            continue
        if isinstance(data, dict) and isinstance(data.get("sgtool"), dict):
            return data | {"_path": candidate}
    raise SgtoolError(f"--resume {path}: no usable checkpoint under {path}/checkpoints; start a new run with -o")

