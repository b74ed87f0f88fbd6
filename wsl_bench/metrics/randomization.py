"""Model-parameter randomisation test (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency maps").

The trained network's maps against the maps of the same network with its weights re-initialised in
a cascade from the output down to the input. A map that barely changes when the model is destroyed
explains the architecture or a prior, not what the model learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from copy import deepcopy

import numpy as np
import torch
from torch import nn

from wsl_bench.metrics.sanity import rank_correlation, shared_floor

# Cascade depths: the classifier head alone, then the top half of the parameterised layers, then all.
DEFAULT_DEPTHS: tuple[tuple[str, float], ...] = (("head", 0.0), ("half", 0.5), ("all", 1.0))


def parameterised_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, from the output back to the input (reverse registration order).

    Registration order is the forward order for the torchvision/timm networks used here, so the
    first entry is the classifier head.
    """
    layers = [(n, m) for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return layers[::-1]


def cascade_sizes(n_layers: int, depths: Sequence[tuple[str, float]] = DEFAULT_DEPTHS) -> list[int]:
    """How many of the output-most layers each depth re-initialises (head = 1, fraction f = ceil(f*n))."""
    return [max(1, min(n_layers, math.ceil(f * n_layers))) for _, f in depths]


@torch.no_grad()
def reinitialise(modules: Sequence[nn.Module], seed: int) -> None:
    """Fresh weights for `modules`: their own `reset_parameters` where they have one, else N(0, 0.02)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):  # the run's global RNG stream is left as it was
        torch.manual_seed(int(seed))
        for m in modules:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                continue
            for p in m.parameters(recurse=False):
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen).to(p) * 0.02)
                else:
                    p.zero_()


def network_of(method) -> nn.Module | None:
    """The network a method explains with: its `net` attribute (the harness convention)."""
    net = getattr(method, "net", None)
    return net if isinstance(net, nn.Module) else None


def randomization_record(method, images: torch.Tensor, classes: Sequence[int], image_ids: Sequence[str], *,
                         depths: Sequence[tuple[str, float]] = DEFAULT_DEPTHS, seed: int = 0,
                         trained: np.ndarray | None = None) -> dict:
    """Per image and depth: mean rank correlation (over `classes`) of trained vs cascade-randomised maps.

    The cells that every map of every image, trained and re-initialised, holds at its minimum (a border
    margin, a fixed mask) are left out: no weight moved them, and their shared ties would read as
    agreement (`floor_share` records their fraction).

    Each depth hands the method a new copy of its network (`method.net`) with more layers re-initialised,
    so caches keyed on the network object (e.g. a dense copy for explaining) are rebuilt. The method is
    left holding the fully randomised copy: load it afresh to use it again. `trained`: the trained maps
    [B, len(classes), h, w] when already at hand (a run's bundle), else they are explained here. Raises
    ValueError when the method exposes no network.
    """
    net = network_of(method)
    if net is None:
        raise ValueError(f"{type(method).__name__} exposes no network (`net`) to re-initialise")
    names = [n for n, _ in parameterised_layers(net)]
    if not names:
        raise ValueError(f"{type(method).__name__}'s network has no parameters to re-initialise")
    if trained is None:
        trained = method.explain(images, list(classes)).detach().float().cpu().numpy()
    sizes = cascade_sizes(len(names), depths)
    corr = np.zeros((len(images), len(depths)))
    floor_share = np.zeros((len(images), len(depths)))
    for j, k in enumerate(sizes):
        copy = deepcopy(net)
        modules = dict(copy.named_modules())
        reinitialise([modules[n] for n in names[:k]], seed)
        method.net = copy.train(net.training)
        rand = method.explain(images, list(classes)).detach().float().cpu().numpy()
        floor = shared_floor([*trained.reshape(-1, *trained.shape[2:]), *rand.reshape(-1, *rand.shape[2:])])
        floor_share[:, j] = floor.mean()
        for i in range(len(images)):
            corr[i, j] = np.mean([rank_correlation(trained[i, c], rand[i, c], floor=floor)
                                  for c in range(trained.shape[1])])
    return {
        "image_ids": list(image_ids),
        "depths": [{"name": n, "fraction": float(f), "layers": int(k)} for (n, f), k in zip(depths, sizes)],
        "n_layers": len(names),
        "head": names[0],
        "correlation": corr.tolist(),
        "floor": "shared",
        "floor_share": floor_share.tolist(),
        "seed": int(seed),
    }
