"""One plain-language sentence per sanity check, for readers who do not know Spearman, SSIM or deletion AUC.

Kept apart from the check code and free of widgets so the verdict panel, reports and tests share the same words;
each sentence says what a *passed* check shows about the map, in terms of the model and the image.
"""
from __future__ import annotations

#: check name (as in checks.csv) -> what passing it means, for a clinician
CHECK_TEXTS: dict[str, str] = {
    "randomization": "The map changes when the model's weights are scrambled, so it depends on what the model "
                     "learned rather than on the image alone.",
    "deletion_auc": "Removing the highlighted pixels first lowers the model's confidence faster than removing "
                    "random pixels, so the highlighted areas matter to the prediction.",
    "insertion_auc": "Adding back the highlighted pixels first restores the model's confidence faster than adding "
                     "random pixels, so the highlighted areas are enough to drive the prediction.",
    "mask_energy": "More of the map falls inside the outlined reference region than a map spread evenly over the "
                   "image would put there.",
}


def plain_text(check: str) -> str:
    """The check's plain-language sentence; a generic one for a check this module does not know yet."""
    return CHECK_TEXTS.get(str(check), "A technical test of whether the map reflects the model's reasoning.")
