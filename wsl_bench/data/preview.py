"""A labelled gallery of SynthCXR images with their ground-truth boxes (for review and docs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsl_bench.io import atomic_path
from wsl_bench.labels import BOX_FINDINGS

COLORS = dict(zip(BOX_FINDINGS, ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")))


def draw_gallery(split, indices, out: str | os.PathLike, cols: int = 4, title: str | None = None) -> Path:
    """Save a grid of split images (original size) with boxes and finding names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    from wsl_bench.labels import FINDINGS

    indices = list(indices)
    rows = max(1, int(np.ceil(len(indices) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), indices):
        img = split.images_orig[i] if hasattr(split, "images_orig") else (split.load_images([i])[0, 0].numpy() * 255)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        bx = split.boxes[split.boxes["image_id"] == split.image_ids[i]]
        for r in bx.itertuples(index=False):
            c = COLORS.get(r.label, "yellow")
            ax.add_patch(patches.Rectangle((r.x - 0.5, r.y - 0.5), r.w, r.h, fill=False, edgecolor=c, linewidth=1.4))
            ax.text(r.x, r.y - 2, r.label, color=c, fontsize=7, va="bottom")
        names = [FINDINGS[j] for j in np.flatnonzero(split.labels[i])]
        ax.set_title("\n".join([split.image_ids[i], ", ".join(names) or "No Finding"]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=90)
    plt.close(fig)
    out.chmod(0o644)
    return out


def pick_preview_indices(split, n: int) -> list[int]:
    """Box images first (one per box finding where possible), then normal images."""
    chosen: list[int] = []
    for lab in BOX_FINDINGS:
        ids = split.boxes.loc[split.boxes["label"] == lab, "image_id"]
        for iid in ids:
            i = split.index_of(iid)
            if i not in chosen:
                chosen.append(i)
                break
    normals = [i for i in range(len(split)) if split.labels[i].sum() == 0]
    chosen += [i for i in normals if i not in chosen][: max(0, n - len(chosen))]
    rest = [i for i in range(len(split)) if i not in chosen]
    chosen += rest[: max(0, n - len(chosen))]
    return chosen[:n]
