"""The reference methods every run adds beside the user's: one home for their names.

The guesses look at no pixel (the floor every method is read against; the priors among them are the
references of the gain over a guess); the ceiling is trained with the exact lesion masks, so a run adds it
only on data that has them.
"""

from __future__ import annotations

GUESS_REFERENCES: tuple[str, ...] = ("prior-center", "prior-lung", "random")
CEILING_REFERENCES: tuple[str, ...] = ("oracle-seg",)
PRIOR_MAP_REFERENCES: tuple[str, ...] = ("prior-lung", "prior-center")
REFERENCE_METHODS: tuple[str, ...] = GUESS_REFERENCES + CEILING_REFERENCES
