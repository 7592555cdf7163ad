"""Ranger, the optimizer the encoder references train with: RAdam + Lookahead (k 6, alpha 0.5) +
gradient centralisation, on torch's own RAdam (whose rectification threshold is Ranger's 5)."""

from __future__ import annotations

import torch


class Ranger(torch.optim.RAdam):
    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.5, k: int = 6, betas=(0.95, 0.999),
                 eps: float = 1e-5, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("lookahead_alpha", alpha)
            group.setdefault("lookahead_k", k)

    @torch.no_grad()
    def step(self, closure=None):
        first = {}  # the slow weights start at the weights before the first update
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.dim() > 1:  # centralise: remove the mean over all but the output dimension
                    p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))
                if "slow" not in self.state[p]:
                    first[p] = p.detach().clone()
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if p in first:
                    state["slow"], state["lookahead_step"] = first[p], 0
                state["lookahead_step"] += 1
                if state["lookahead_step"] % group["lookahead_k"] == 0:
                    slow = state["slow"]
                    slow.add_(p.detach() - slow, alpha=group["lookahead_alpha"])
                    p.copy_(slow)
        return loss


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return Ranger(params, lr=lr)
