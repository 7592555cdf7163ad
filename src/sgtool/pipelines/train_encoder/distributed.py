"""One code path for one process and for torchrun: the process group, the device of this rank and
batch-norm statistics shared over ranks."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn



@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: torch.device) -> Dist:
    """Join torchrun's process group when launched by it (NCCL on CUDA, gloo on CPU)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    if device.type == "cpu":  # ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def teardown(ctx: Dist) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch, for CPU/gloo (torch's
    SyncBatchNorm, used on GPUs, refuses CPU tensors). Two all-reduces (mean, then centred squares)
    keep the variance as accurate as a single process's; the all-reduces are differentiable."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        local = x.new_tensor([x.numel() / channels])
        count = all_reduce(local.clone())
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / count
        centred = x - mean.reshape(1, -1, 1, 1)
        var = all_reduce(centred.square().sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        out = centred * torch.rsqrt(var + self.eps).reshape(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)
        return out


def convert_batch_norms(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d made rank-synchronised (state names unchanged, so checkpoints keep their layout)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats).to(device)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_batch_norms(child, device)
    return module


def average_gradients(module: nn.Module, ctx: Dist) -> None:
    """Mean gradient over ranks for a module outside DDP (the latent discriminator, whose R1 term needs
    double backward, which DDP does not support)."""
    if not ctx.active:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(ctx.world)


