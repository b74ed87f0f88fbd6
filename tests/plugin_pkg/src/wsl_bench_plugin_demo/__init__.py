"""A tiny CAM network registered as method `tiny-cam`: the smallest real trainable method.

It is what a user writes to bring their own method (see docs/contributing.md): a net, `fit` through
`wsl_bench.training.train_module`, weights saved in the suite's one checkpoint format
(`wsl_bench.checkpoints`: ``model.safetensors`` + ``model.json``), `explain` returning class maps.

Fault injection for the harness's kill-and-resume tests (test use only): with WSL_DEMO_KILL_AT_STEP=N the
process SIGKILLs itself after training step N; with WSL_DEMO_KILL_AT_EXPLAIN=N, at its N-th explain call.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L

import torch
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, save_checkpoint
from wsl_bench.labels import NUM_FINDINGS
from wsl_bench.methods import Method, register_method
from wsl_bench.training import ClassifierModule, train_module


class TinyCAMNet(nn.Module):
    """Two convolutions, then a 1x1 convolution to 14 class maps; logits are the maps' spatial mean."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(2 * width, NUM_FINDINGS, 1)

    def class_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.class_maps(images).mean(dim=(2, 3))


class _KillAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


@register_method("tiny-cam", paper="wsl-bench test plug-in (Zhou et al. CAM, CVPR 2016, in miniature)")
class TinyCAM(Method):
    """A two-layer CAM network; the plug-in example and the harness's test method."""

    presets = {"quick": {"max_epochs": 2, "batch_size": 32}}
    ablations = {"wide": {"width": 4}}

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        torch.manual_seed(int(self.config.get("init_seed", 0)))
        self.net = TinyCAMNet(int(self.config.get("width", 8)))

    def fit(self, train, val, ctx) -> None:
        torch.manual_seed(ctx.seed)
        self.net = TinyCAMNet(int(self.config.get("width", 8)))
        module = ClassifierModule(self.net, lr=float(self.config.get("lr", 1e-2)))
        kill = os.environ.get("WSL_DEMO_KILL_AT_STEP")
        train_module(
            module, train, val, ctx,
            max_epochs=int(self.config.get("max_epochs", 2)), batch_size=int(self.config.get("batch_size", 32)),
            callbacks=[_KillAtStep(int(kill))] if kill else [],
        )
        self.save(ctx.checkpoint_dir)

    def save(self, directory: Path) -> None:
        save_checkpoint(directory, self.net.state_dict(), {"width": int(self.config.get("width", 8))})

    def load(self, directory: Path) -> None:
        state, shape = load_checkpoint(directory, kind="a tiny-cam checkpoint", fix="fit tiny-cam first")
        self.config.update(shape)  # the saved width rebuilds the network the weights belong to
        self.net = TinyCAMNet(int(self.config["width"]))
        self.net.load_state_dict(state)
        self.net.to(self.device).eval()

    def to(self, device):
        super().to(device)
        self.net.to(self.device)
        return self

    @torch.no_grad()
    def predict(self, images):
        return torch.sigmoid(self.net(images.to(self.device)))

    @torch.no_grad()
    def explain(self, images, classes):
        self._explain_calls = getattr(self, "_explain_calls", 0) + 1
        if os.environ.get("WSL_DEMO_KILL_AT_EXPLAIN") == str(self._explain_calls):
            os.kill(os.getpid(), signal.SIGKILL)
        maps = self.net.class_maps(images.to(self.device))
        return maps[:, list(classes)]
