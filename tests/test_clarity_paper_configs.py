"""CLARiTy-S-16-224 and -S-16-512 (the paper's configurations, paper preset): one full training
step with every loss and the ConvNeXtV2-B teacher, then one explain call, on CPU."""

from __future__ import annotations

import pytest
import torch

from clarity.config import ClarityConfig
from clarity.teacher import Teacher
from clarity.training import ClarityModule
from wsl_bench.methods import create_method

EXPECTED_PARTS = {"bce", "orth", "seg_bce", "fg", "bg", "distill"}


def _one_step_and_explain(name: str, batch_size: int):
    method = create_method(name, preset="paper")
    cfg: ClarityConfig = method.cfg
    size = cfg.arch_spec["img_size"]
    torch.manual_seed(0)
    net = method.ensure_net()
    teacher = Teacher(cfg.teacher, size)
    lung = torch.zeros(batch_size, 1, size, size)
    lung[..., size // 8: -size // 8, size // 16: -size // 16] = 1
    module = ClarityModule(net, cfg, teacher=teacher, prior=lambda batch, training: batch["lung_mask"])
    module.train()
    batch = {"image": torch.rand(batch_size, 1, size, size), "labels": torch.eye(14)[:batch_size],
             "index": torch.arange(batch_size), "lung_mask": lung}
    opt = module.configure_optimizers()
    before = net.class_tokens.detach().clone()
    loss, parts = module.compute_loss(batch, module(batch["image"]))
    assert set(parts) == EXPECTED_PARTS and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert not torch.equal(before, net.class_tokens)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    maps = method.explain(batch["image"], [0, 4, 13])
    g = size // 16
    assert maps.shape == (batch_size, 3, g, g) and torch.isfinite(maps).all()
    return cfg


def test_s16_224_full_step_and_explain():
    cfg = _one_step_and_explain("clarity-s16-224", batch_size=2)
    assert cfg.resolved_arch == "s16-224" and cfg.teacher == "convnextv2_base"


@pytest.mark.slow  # ViT-S at 512 px (1024 patches) + ConvNeXtV2-B at 512 on CPU, one thread
def test_s16_512_full_step_and_explain():
    cfg = _one_step_and_explain("clarity-s16-512", batch_size=1)
    assert cfg.resolved_arch == "s16-512"
