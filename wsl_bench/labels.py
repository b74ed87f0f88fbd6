"""The ChestX-ray14 label set, the 8 box findings, and the one Infiltrate/Infiltration mapping."""

from __future__ import annotations

# The 14 findings in the official ChestX-ray14 order (Data_Entry_2017 "Finding Labels").
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_FINDINGS = len(FINDINGS)

# The 8 findings with boxes, spelled as in BBox_List_2017.csv (which says "Infiltrate").
BOX_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)

# Box-file spelling -> label-file spelling. The only place the two vocabularies meet.
_BOX_TO_FINDING = {"Infiltrate": "Infiltration"}
_FINDING_TO_BOX = {v: k for k, v in _BOX_TO_FINDING.items()}


def box_to_finding(label: str) -> str:
    """Map a box-file label ("Infiltrate") to its label-file finding ("Infiltration")."""
    return _BOX_TO_FINDING.get(label, label)


def finding_to_box(label: str) -> str:
    """Map a label-file finding ("Infiltration") to its box-file label ("Infiltrate")."""
    return _FINDING_TO_BOX.get(label, label)


def finding_index(label: str) -> int:
    """Index into FINDINGS of a finding in either spelling; a clear error for an unknown one."""
    name = box_to_finding(label)
    try:
        return FINDINGS.index(name)
    except ValueError:
        raise ValueError(
            f"unknown finding label {label!r}; expected one of {', '.join(FINDINGS)} "
            f"(box files may say 'Infiltrate')"
        ) from None


BOX_FINDING_INDICES: tuple[int, ...] = tuple(finding_index(b) for b in BOX_FINDINGS)
