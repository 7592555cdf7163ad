"""`train_encoder`: one training run, in one process or as one rank of a torchrun job.

Rank 0 alone writes (checkpoints, run.json, metrics.jsonl, TensorBoard logs, validation grids);
every rank runs the same steps on its share of each global batch, and DDP averages the gradients.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ...device import resolve_device
from ...errors import SgtoolError
from ...losses import load_lpips
from ...models import load_generator
from ...models.encoders import read_encoder_checkpoint
from ...models.encoders.sfe import SFE_PARTS
from ...models.encoders.sg2_encoders import build_sg2_encoder
from ...progress import SILENT, Reporter
from ...settings import TrainEncoderSettings
from ...utils.io import digest, file_identity, image_grid, save_image, to_uint8, write_json
from ..shared.memory import available_memory, recomputable_bytes
from . import checkpoints as ckpts
from .data import FolderImages, GlobalBatchSampler, SyntheticLatents, render_targets, scan_folder, split_files
from .distributed import Dist, average_gradients, convert_batch_norms, setup, teardown
from .image_tasks import encoder_source, grid_inputs, paired_datasets, uses_pairs
from .objectives import LatentPool, Objectives, identity_model, make_discriminator
from .optim import make_optimizer
from .pretrained import load_backbone
from .records import resume_settings
from .sfe import SfeTask, build_sfe
from .tasks import Batch, EncoderTask, build_encoder, check_generator, default_iterations, tuned_layers

SYNTHETIC_TEST_OFFSET = 2 ** 40  # held-out synthetic latents never overlap the training ones


class Trainer:
    def __init__(self, settings: TrainEncoderSettings, ctx: Dist, reporter: Reporter, resume: dict | None):
        self.s, self.ctx, self.reporter = settings, ctx, reporter
        self.outdir = Path(settings.outdir)
        self._data()  # bad data fails first, before any model loads
        device = ctx.device
        network = str(settings.network)
        generator = load_generator(network, device=device)
        check_generator(settings, generator, network)
        _check_step_memory(generator, self.sampler.micro, settings.input_size, device)
        self.generator = generator.eval().requires_grad_(False)
        self.network = network
        settings = settings.model_copy(update={"encoder_steps": default_iterations(settings, generator)})
        self.s = settings
        tuned = tuned_layers(settings, generator) if settings.arch == "hyperstyle" else None
        torch.manual_seed(settings.seed)  # the initial weights depend on the seed alone
        encoder = build_sfe(settings, generator) if settings.arch == "sfe" else build_encoder(settings, generator, tuned)
        if resume is None and settings.backbone_init == "pretrained":
            load_backbone(encoder, settings)
        encoder = encoder.to(device)
        if settings.sync_bn and ctx.active:
            encoder = convert_batch_norms(encoder, device)
        self.w_encoder, latent_avg = self._start_codes(generator, device)
        self.discriminator = make_discriminator(settings, generator)
        lpips_model = (load_lpips("alex", device, random_backbone=settings.lpips_random_backbone, seed=settings.seed)
                       if settings.lpips_weight > 0 else None)
        id_weights = settings.id_weights
        if settings.id_loss != "none" and settings.id_weight > 0 and id_weights is None:
            from ...hub import resolve_reference

            id_weights = resolve_reference("arcface-ir-se50" if settings.id_loss == "arcface" else "moco-v2-resnet50",
                                           kind="backbone")
        objectives = Objectives(settings, latent_avg, lpips_model, identity_model(settings, id_weights, device),
                                self.discriminator.to(device) if self.discriminator is not None else None)
        if settings.arch == "sfe":
            self.task = SfeTask(settings, generator, encoder, latent_avg, objectives, self.w_encoder, ctx.rank)
        else:
            self.task = EncoderTask(settings, generator, encoder, latent_avg, objectives, self.w_encoder)
        find_unused = self.task.progressive or settings.arch == "sfe"  # SFE trains one part per phase
        self.model = (DistributedDataParallel(encoder, find_unused_parameters=find_unused) if ctx.active
                      else encoder)
        self.optimizer = make_optimizer(settings.optimizer, encoder.parameters(), settings.lr)
        self.d_optimizer = (torch.optim.Adam(self.discriminator.parameters(), lr=settings.w_discriminator_lr)
                            if self.discriminator is not None else None)
        self.pools = (LatentPool(settings.w_pool_size), LatentPool(settings.w_pool_size))
        self.step, self.best, self.bad_files = 0, None, 0
        if resume is not None:
            self._restore(resume)
            reporter.note(f"resuming {settings.outdir} at step {self.step} of {settings.steps}")
        self.decoder = ckpts.decoder_state(generator)  # frozen: converted once for every checkpoint

    # ---- set-up
    def _start_codes(self, generator, device):
        s = self.s
        avg = generator.mapping.w_avg.detach().to(device, torch.float32).reshape(1, -1)
        latent_avg = avg.expand(generator.num_ws, -1).clone()
        if s.arch not in ("hyperstyle", "sfe"):
            return None, latent_avg
        if s.w_encoder is None and s.arch == "sfe":
            raise SgtoolError("sfe measures edits with an e4e's codes, as StyleFeatureEditor does: pass --w-encoder "
                              "(an e4e run's best.pt for this generator, or e4e_ffhq_encode.pt)")
        if s.w_encoder is None:
            raise SgtoolError("hyperstyle starts from a W encoder's codes: pass --w-encoder (an e4e/pSp run's best.pt "
                              "or HyperStyle's faces_w_encoder.pt)")
        w_ckpt = read_encoder_checkpoint(s.w_encoder)
        encoder = build_sg2_encoder(w_ckpt, w_ckpt.encoder_type)
        if encoder.style_count != generator.num_ws or encoder.style_dim != generator.w_dim:
            raise SgtoolError(f"--w-encoder {s.w_encoder} predicts {encoder.style_count} x {encoder.style_dim} codes; "
                              f"{self.network} takes {generator.num_ws} x {generator.w_dim}")
        return encoder.to(device).eval().requires_grad_(False), latent_avg

    def _data(self):
        s, ctx = self.s, self.ctx
        if uses_pairs(s):
            train, test, self.counts = paired_datasets(s)
        elif s.synthetic:
            train, test = SyntheticLatents(s.synthetic_size), SyntheticLatents(s.test_images, SYNTHETIC_TEST_OFFSET)
            self.counts = {"train": len(train), "test": len(test), "unreadable": 0}
        else:
            scan = scan_folder(s.data, s.input_size)
            if s.test_data is not None:
                test_scan = scan_folder(s.test_data, s.input_size, what="--test-data")
                train_files, test_files = scan.files, test_scan.files[:s.test_images]
                unreadable = len(scan.unreadable) + len(test_scan.unreadable)
            else:
                train_files, test_files = split_files(scan.files, s.test_fraction, s.seed)
                test_files, unreadable = test_files[:s.test_images], len(scan.unreadable)
            train = FolderImages(train_files, s.input_size, flip=s.flip, seed=s.seed)
            test = FolderImages(test_files, s.input_size)
            self.counts = {"train": len(train), "test": len(test), "unreadable": unreadable}
        self.train_set, self.test_set = train, test
        self.sampler = GlobalBatchSampler(train, s.batch_size, s.grad_accum, ctx.world, ctx.rank, s.seed)
        workers = 0 if s.synthetic else s.workers
        self.loader_args = dict(batch_size=self.sampler.micro, num_workers=workers, drop_last=True,
                                persistent_workers=False)

    def _restore(self, data: dict):
        meta = data["sgtool"]
        prefix = "hypernet." if self.s.arch == "hyperstyle" else "encoder."
        if self.s.arch == "sfe":
            state = {ours + k[len(theirs):]: v for k, v in data["state_dict"].items()
                     for ours, theirs in SFE_PARTS.items() if k.startswith(theirs)}
        else:
            state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
        source = data.get("_path", self.outdir)
        expected = self.task.encoder.state_dict()
        missing = sorted(set(expected) - set(state))
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or wrong or set(state) - set(expected):
            detail = (f"missing {', '.join(missing[:3])}" if missing else
                      f"{wrong[0]} is {list(state[wrong[0]].shape)}, expected {list(expected[wrong[0]].shape)}"
                      if wrong else "keys of another encoder")
            raise SgtoolError(f"--resume: {source} is not a checkpoint of this run's {self.s.arch} encoder ({detail}); "
                              "start a new run with -o")
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise SgtoolError(f"--resume: {source} holds NaN or infinite weights ({prefix}{bad}); resume from an "
                              "earlier checkpoint (delete the damaged one) or start a new run with -o")
        self.task.encoder.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(meta["optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(meta["discriminator"])
            self.d_optimizer.load_state_dict(meta["discriminator_optimizer"])
            for pool, items in zip(self.pools, meta["pools"]):
                pool.load(items, self.ctx.device)
        self.step = int(meta["step"])
        self.best = data.get("best_val_loss")
        self.bad_files = int(meta.get("bad_files", 0))

    def _train_state(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "bad_files": self.bad_files}
        if self.discriminator is not None:
            state.update(discriminator=self.discriminator.state_dict(),
                         discriminator_optimizer=self.d_optimizer.state_dict(),
                         pools=[pool.state() for pool in self.pools])
        return state

    # ---- batches
    def _batch(self, raw: dict, epoch: int = 0) -> Batch:
        device = self.ctx.device
        if self.s.synthetic:
            images, ws = render_targets(self.generator, raw["index"], self.s.seed, self.s.truncation,
                                        self.s.input_size, device)
            batch = Batch(x=images, latents=ws)
        else:
            batch = Batch(x=raw["image"].to(device, non_blocking=True))
        batch.source = encoder_source(self.s, raw, batch.x, epoch)
        return batch

    def _sync(self, final_micro: bool):
        def sync(final_iteration: bool):
            if self.ctx.active and not (final_micro and final_iteration):
                return self.model.no_sync()
            return nullcontext()
        return sync

    def _discriminator_step(self, codes: torch.Tensor) -> dict:
        """e4e's latent discriminator on mapped w (real) vs the encoder's codes (fake), R1 every d_reg_every."""
        import torch.nn.functional as F

        s, D = self.s, self.discriminator
        rng = random.Random(f"{s.seed}:{self.step}:{self.ctx.rank}")
        z = torch.randn(codes.shape[0], self.generator.z_dim,
                        generator=torch.Generator().manual_seed(rng.randrange(2 ** 32))).to(codes.device)
        with torch.no_grad():
            real = self.generator.mapping(z, None)[:, 0]
        fake = codes[:, 0].detach()  # e4e discriminates the base code
        real, fake = self.pools[0].query(real, rng), self.pools[1].query(fake, rng)
        D.requires_grad_(True)
        loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(D, self.ctx)
        self.d_optimizer.step()
        logs = {"discriminator_loss": float(loss.detach())}
        if self.step % s.d_reg_every == 0 and s.r1 > 0:
            real = real.detach().requires_grad_(True)
            pred = D(real)
            (grad,) = torch.autograd.grad(pred.sum(), real, create_graph=True)
            r1 = grad.pow(2).sum(dim=1).mean() * (s.r1 / 2 * s.d_reg_every)
            self.d_optimizer.zero_grad(set_to_none=True)
            r1.backward()
            average_gradients(D, self.ctx)
            self.d_optimizer.step()
            logs["discriminator_r1_loss"] = float(r1.detach())
        D.requires_grad_(False)
        return logs

    def train_step(self, micro_batches: list[dict]) -> dict:
        self.task.set_step(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        last_codes = None
        for m, raw in enumerate(micro_batches):
            self.bad_files += int(raw["failed"].sum())
            batch = self._batch(raw, epoch=self.sampler.epoch)
            results = self.task.run(self.model, batch, train=True, sync=self._sync(m == len(micro_batches) - 1))
            for k, v in results[-1].losses.items():
                logs[k] = logs.get(k, 0.0) + v / len(micro_batches)
            last_codes = results[-1].codes
        if self.s.grad_accum > 1:
            for p in self.task.encoder.parameters():
                if p.grad is not None:
                    p.grad.div_(self.s.grad_accum)
        self.optimizer.step()
        if self.discriminator is not None:
            logs.update(self._discriminator_step(last_codes))
        return logs

    # ---- validation
    @torch.no_grad()
    def validate(self) -> dict:
        from ...metrics import mse

        s = self.s
        self.model.eval()
        self.task.validation_step(self.step)
        loader = DataLoader(self.test_set, batch_size=max(1, min(s.batch_size, 8)), shuffle=False,
                            num_workers=0 if s.synthetic else min(2, s.workers))
        sums: dict[str, float] = {}
        count, grid = 0, []
        for raw in loader:
            batch = self._batch(raw)
            results = self.task.run(self.task.encoder, batch, train=False)
            n = batch.x.shape[0]
            final = results[-1]
            values = dict(final.losses)
            values["mse"] = float(mse(final.images, batch.x).mean())  # of the clamped images, as invert --metrics
            if "loss_lpips" in values:
                values["lpips"] = values["loss_lpips"]
            if "loss_id" in values:
                values["id_similarity"] = 1 - values["loss_id"]
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
            if len(grid) < s.grid_images:
                for i in range(min(n, s.grid_images - len(grid))):
                    grid.append(grid_inputs(s, batch, i) + [r.images[i] for r in results])
        self.model.train()
        metrics = {k: v / count for k, v in sums.items()}
        self.last_grid = grid
        return metrics

    def _write_grid(self, writer) -> Path:
        rows = self.last_grid
        tiles = to_uint8(torch.stack([img.cpu() for row in rows for img in row]))
        grid = image_grid(tiles, cols=len(rows[0]))
        path = save_image(grid, self.outdir / "val" / f"step_{self.step:07d}.png")
        if writer is not None:
            writer.add_image("val/input_then_iterations", grid, self.step, dataformats="HWC")
        return path

    # ---- the run
    def checkpoint(self, best: bool = False) -> Path:
        data = ckpts.checkpoint_dict(self.task, self.s, self.generator, self.decoder, self.network, self.step,
                                     self.best, self._train_state())
        if best:
            return ckpts.save_checkpoint(data, self.outdir / "best.pt")
        path = ckpts.save_checkpoint(data, self.outdir / "checkpoints" / f"step_{self.step:07d}.pt")
        ckpts.prune(self.outdir, self.s.keep_last)
        return path

    def parameter_digest(self) -> str:
        return digest(b"".join(p.detach().cpu().numpy().tobytes() for p in self.task.encoder.parameters()))

    def run(self) -> dict:
        s, ctx = self.s, self.ctx
        writer = log = None
        if ctx.main:
            from torch.utils.tensorboard import SummaryWriter

            self.outdir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(log_dir=str(self.outdir / "logs"), purge_step=self.step or None)
            log = open(self.outdir / "metrics.jsonl", "a")
            self._record("running")
        self.reporter.start(f"train {s.arch}", total=s.steps)
        self.reporter.advance(self.step)
        start = time.perf_counter()
        first_step = self.step
        step_seconds: list[float] = []  # data + optimizer step, validation and saving left out
        val = {}
        try:
            if self.step == 0:  # the untrained encoder's held-out loss, the baseline of the run
                val = self.validate()
                if ctx.main:
                    self._log(writer, log, "test", val)
            while self.step < s.steps:
                epoch, offset = divmod(self.step, self.sampler.steps_per_epoch)
                self.sampler.set_epoch(epoch)
                self.sampler.start_step = offset
                if isinstance(self.train_set, FolderImages):
                    self.train_set.epoch = epoch
                iterator = iter(DataLoader(self.train_set, sampler=self.sampler, **self.loader_args))
                for _ in range(offset, self.sampler.steps_per_epoch):
                    tick = time.perf_counter()
                    micro = [next(iterator) for _ in range(s.grad_accum)]
                    logs = self.train_step(micro)
                    step_seconds.append(time.perf_counter() - tick)
                    self.step += 1
                    self.reporter.advance(1, info=f"loss {logs['loss']:.4f}")
                    if ctx.main and (self.step % s.log_every == 0 or self.step == s.steps):
                        self._log(writer, log, "train", logs)
                    if self.step % s.val_every == 0 or self.step == s.steps:
                        val = self.validate()
                        if ctx.main:
                            self._log(writer, log, "test", val)
                            self._write_grid(writer)
                            if self.best is None or val["loss"] < self.best:
                                self.best = val["loss"]
                                self.checkpoint(best=True)
                    if ctx.main and (self.step % s.save_every == 0 or self.step == s.steps):
                        self.checkpoint()
                    if self.step >= s.steps:
                        break
        finally:
            self.reporter.finish()
            if writer is not None:
                writer.close()
                log.close()
        digests = self._gather_digests()
        self.bad_files = self._total(self.bad_files)
        seconds = time.perf_counter() - start
        summary = {"status": "done", "outdir": str(self.outdir), "arch": s.arch, "steps": self.step,
                   "steps_this_run": self.step - first_step, "seconds": seconds,
                   "seconds_per_step_median": float(np.median(step_seconds)) if step_seconds else None,
                   "world_size": ctx.world, "best_val_loss": self.best, "val": val, "data": self.counts,
                   "bad_files": self.bad_files, "rank_parameter_digests": digests,
                   "best": str(self.outdir / "best.pt"), "checkpoints": [str(p) for p in
                                                                         ckpts.step_checkpoints(self.outdir)]}
        if ctx.main:
            self._record("done", summary)
        return summary

    def _total(self, count: int) -> int:
        """A count summed over the ranks (each read its own share of the data)."""
        if not self.ctx.active:
            return count
        import torch.distributed as dist

        value = torch.tensor([count], dtype=torch.int64)
        dist.all_reduce(value)
        return int(value)

    def _gather_digests(self) -> list[str]:
        mine = self.parameter_digest()
        if not self.ctx.active:
            return [mine]
        import torch.distributed as dist

        gathered: list = [None] * self.ctx.world
        dist.all_gather_object(gathered, mine)
        return gathered

    def _log(self, writer, log, split: str, values: dict) -> None:
        for k, v in values.items():
            writer.add_scalar(f"{split}/{k}", v, self.step)
        log.write(json.dumps({"step": self.step, "split": split, **values}) + "\n")
        log.flush()

    def _record(self, status: str, summary: dict | None = None) -> None:
        write_json({"status": status, "arch": self.s.arch, "step": self.step, "best_val_loss": self.best,
                    "network": file_identity(self.network) if Path(self.network).is_file() else self.network,
                    "settings": self.s.model_dump(mode="json"), "data": self.counts, "summary": summary},
                   self.outdir / "run.json")


def _check_step_memory(generator, micro_batch: int, input_size: int, device: torch.device) -> None:
    """Refuse, before anything is allocated, a micro-batch that cannot fit: a step holds its targets and the
    encoder's inputs (image + reconstruction) in float32 and backpropagates through the generator at least once,
    saving its activations. A lower bound: the encoder's own activations come on top."""
    images = 4 * micro_batch * (3 * int(generator.img_resolution) ** 2 + 6 * input_size ** 2)
    need = images + sum(recomputable_bytes(generator, micro_batch, compiled_kernels=True,
                                           device_type=device.type).values())
    free = available_memory(device)
    if free is not None and need > free:
        raise SgtoolError(f"a micro-batch of {micro_batch} images needs at least {need / 2 ** 30:.1f} GiB (its images "
                          f"and the generator's activations), and {free / 2 ** 30:.1f} GiB are free on {device}; "
                          "lower --batch-size or raise --grad-accum")


def train_encoder(settings: TrainEncoderSettings, given: set[str] | frozenset = frozenset(),
                  reporter: Reporter = SILENT) -> dict | None:
    """Train (or with settings.resume, continue) an encoder; returns the run's summary (under torchrun, on the main
    process only: the others return None)."""
    resume = None
    if settings.resume is not None:
        settings, resume = resume_settings(settings, set(given))
    elif settings.network is None:
        raise SgtoolError("--network is required: the generator the encoder learns to invert into")
    elif not settings.synthetic and settings.data is None:
        raise SgtoolError("pass --data FOLDER (aligned images) or --synthetic (images rendered by the generator)")
    elif (Path(settings.outdir) / "run.json").exists():
        raise SgtoolError(f"{settings.outdir} already holds a training run; continue it with --resume "
                          f"{settings.outdir} or choose another -o")
    ctx = setup(resolve_device(settings.device))
    try:
        trainer = Trainer(settings, ctx, reporter if ctx.main else SILENT, resume)
        summary = trainer.run()
        return summary if ctx.main else None
    finally:
        teardown(ctx)
