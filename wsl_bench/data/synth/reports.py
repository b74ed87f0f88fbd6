"""Radiology-style reports for SynthCXR images: findings named with side, zone and lobe, plus
normal-structure sentences. Normal phrasing is drawn from the real OpenI (NLMCXR) reports shipped
in the torchxrayvision wheel when available (sentences that mention no pathology)."""

from __future__ import annotations

import functools
import re
import tarfile

import numpy as np

from wsl_bench.data import assets

_LOBE = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}

_BOX_PHRASES = {
    "Nodule": ["A {size} nodular opacity is seen in the {zone} zone of the {side} lung ({lobe}).",
               "There is a {size} well-circumscribed nodule projecting over the {lobe}."],
    "Mass": ["A lobulated mass is present in the {side} {zone} zone, likely within the {lobe}.",
             "There is a {size} mass in the {lobe}."],
    "Atelectasis": ["Linear opacity in the {side} {zone} zone consistent with subsegmental atelectasis of the {lobe}.",
                    "Wedge-shaped opacity in the {lobe} with volume loss, compatible with atelectasis."],
    "Infiltrate": ["Patchy ill-defined opacities in the {side} {zone} zone ({lobe}), suggesting an infiltrate.",
                   "There is a hazy infiltrate in the {lobe}."],
    "Pneumonia": ["Dense airspace consolidation with air bronchograms in the {lobe}, consistent with pneumonia.",
                  "Focal consolidation in the {side} {zone} zone concerning for pneumonia."],
    "Effusion": ["Blunting of the {side} costophrenic angle with a meniscus, consistent with a {size} {side} pleural effusion.",
                 "There is a {size} {side} pleural effusion."],
    "Pneumothorax": ["A {side} apical pneumothorax is present with a visible pleural line and absent lung markings peripherally.",
                     "There is a {size} {side} pneumothorax."],
    "Cardiomegaly": ["The heart is enlarged (cardiothoracic ratio above 0.5).", "Cardiomegaly."],
}

_IMAGE_PHRASES = {
    "Consolidation": "Lobar consolidation is present in the lower lung zone.",
    "Edema": "Bilateral perihilar haziness and Kerley B lines consistent with pulmonary edema.",
    "Emphysema": "The lungs are hyperinflated and hyperlucent with attenuated vascular markings, consistent with emphysema.",
    "Fibrosis": "Reticular interstitial opacities in the lower and peripheral lungs consistent with fibrosis.",
    "Pleural_Thickening": "Pleural thickening along the lateral chest wall.",
    "Hernia": "Retrocardiac opacity with an air-fluid level consistent with a hiatal hernia.",
}

_NORMAL_FALLBACK = {
    "heart": ["The heart is normal in size.", "Heart size is within normal limits.", "Normal cardiomediastinal silhouette."],
    "lungs": ["The lungs are clear.", "No focal airspace consolidation.", "Lungs are clear bilaterally."],
    "pleura": ["No pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion is seen."],
    "bones": ["Visualized osseous structures are intact.", "No acute bony abnormality."],
}

_PATHOLOGY_WORDS = re.compile(
    r"(xxxx|effusion|pneumothora|opacit|consolidat|nodul|mass|atelecta|infiltrat|pneumonia|edema|oedema|"
    r"emphysem|fibros|thicken|hernia|cardiomegal|enlarg|granulom|scar|degenerat|fracture|surgical|"
    r"calcif|catheter|tube|wire|post|prior|compar|since|again|unchanged|stable|interval|hyperexpan|"
    r"tortuous|low lung|volume|otherwise|borderline|disease|demineral|arthrit|scan|decreased|changes|"
    r"mild|minimal|small|large|present|noted|suggest|may|possibl|\?)",
    re.I,
)
_NORMAL_WORDS = re.compile(r"\b(no|normal|clear|unremarkable|intact|negative)\b", re.I)


@functools.lru_cache(maxsize=1)
def openi_normal_sentences() -> dict[str, list[str]]:
    """Normal-structure sentences from the real OpenI reports, grouped by what they describe."""
    groups: dict[str, set[str]] = {k: set() for k in _NORMAL_FALLBACK}
    try:
        path = assets.wheel_file(assets.REPORTS_TGZ)
        with tarfile.open(path, "r:gz") as tf:
            for m in tf:
                if not m.isfile() or not m.name.endswith(".xml"):
                    continue
                text = tf.extractfile(m).read().decode("utf-8", "ignore")
                for sec in re.findall(r'<AbstractText Label="FINDINGS">(.*?)</AbstractText>', text, re.S):
                    for sent in re.split(r"(?<=\.)\s+", sec.strip()):
                        sent = sent.strip()
                        if not (15 <= len(sent) <= 90) or _PATHOLOGY_WORDS.search(sent) or not _NORMAL_WORDS.search(sent) or not sent.endswith("."):
                            continue
                        low = sent.lower()
                        if "heart" in low or "cardi" in low or "mediastin" in low:
                            groups["heart"].add(sent)
                        elif "pleural" in low or "pneumothorax" in low:
                            groups["pleura"].add(sent)
                        elif "lung" in low or "airspace" in low:
                            groups["lungs"].add(sent)
                        elif "bon" in low or "osseous" in low or "skelet" in low:
                            groups["bones"].add(sent)
    except (OSError, tarfile.TarError):
        pass
    return {k: sorted(v) if len(v) >= 3 else list(_NORMAL_FALLBACK[k]) for k, v in groups.items()}


def _size_word(area_frac: float) -> str:
    return "small" if area_frac < 0.01 else ("moderate" if area_frac < 0.05 else "large")


def write_report(seed: int, lesions, findings, view: str, g: int) -> str:
    """One report: FINDINGS (abnormal sentences first, then normal ones for untouched structures)
    and IMPRESSION."""
    rng = np.random.default_rng(seed)
    normal = openi_normal_sentences()
    sents, impression = [], []
    labels = set()
    for les in lesions:
        labels.add(les.label)
        area = float(les.mask.sum()) / (g * g)
        tmpl = _BOX_PHRASES[les.label][int(rng.integers(len(_BOX_PHRASES[les.label])))]
        sents.append(tmpl.format(side=les.side, zone=les.zone, lobe=_LOBE[(les.side, les.zone)], size=_size_word(area)))
        impression.append(f"{les.label.lower()} ({les.side} {les.zone} zone)" if les.label != "Cardiomegaly" else "cardiomegaly")
    for f in findings:
        sents.append(_IMAGE_PHRASES[f])
        impression.append(f.replace("_", " ").lower())
    if "Cardiomegaly" not in labels:
        sents.append(normal["heart"][int(rng.integers(len(normal["heart"])))])
    if not (labels & {"Effusion", "Pneumothorax"}):
        sents.append(normal["pleura"][int(rng.integers(len(normal["pleura"])))])
    if not lesions and not findings:
        sents.append(normal["lungs"][int(rng.integers(len(normal["lungs"])))])
    sents.append(normal["bones"][int(rng.integers(len(normal["bones"])))])
    imp = ("Findings: " + "; ".join(impression) + ".") if impression else "No acute cardiopulmonary abnormality."
    return f"{view} view of the chest. FINDINGS: " + " ".join(sents) + " IMPRESSION: " + imp
