"""The verdict panel's words: class names, each sanity check in plain language, when a verdict was saved.

Pure functions (no ipywidgets) so :class:`medwb.ui.widgets.verdict.VerdictPanel` stays one screen of logic and the
wording can be tested on its own. Classes are named ``"<value>: <name>"`` as in the review queue, so a reader sees
"0: normal" rather than a bare "0".
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from medwb.explain.check_texts import plain_text
from medwb.ui.widgets.review_text import class_label


def index_classes(index: pd.DataFrame) -> dict[int, str]:
    """Class names as the explain run wrote them (prediction -> prediction_name): the fallback without a study."""
    if not {"prediction", "prediction_name"} <= set(index.columns):
        return {}
    out: dict[int, str] = {}
    for value, name in zip(index["prediction"], index["prediction_name"]):
        v = class_value(value)
        if v is not None and str(name):
            out[v] = str(name)
    return out


def class_value(value: Any) -> int | None:
    """The integer class of an index cell ("1", "1.0", 1), or None when the cell is empty or not a class."""
    try:
        f = float(str(value))
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and float(int(f)) == f else None


def class_text(classes: Mapping[int, str], value: Any) -> str:
    """``"0: normal"`` for a known class, the raw value otherwise (a segmentation target, an unknown number)."""
    v = class_value(value)
    return class_label(classes, v) if v is not None and v in classes else str(value)


def selection_text(classes: Mapping[int, str], reason: str) -> str:
    """The explain run's selection reason with class names: "misclassified (true 1: pneumonia, predicted 0: normal)"
    (folders already written keep their bare numbers in index.csv, so the panel names them when it shows them)."""
    return re.sub(r"\b(true|predicted) (\d+)\b", lambda m: f"{m[1]} {class_text(classes, m[2])}", str(reason))


def checks_html(checks: pd.DataFrame) -> str:
    """Each check of one method: pass/FAIL, its name and one sentence a clinician can follow (failures in red)."""
    lines = []
    for _, r in checks.iterrows():
        passed = r["passed"] if not isinstance(r["passed"], str) else r["passed"].lower() == "true"
        mark = "<span style='color:#080'>passed</span>" if passed else \
            "<span style='color:#c00'><b>FAILED</b></span>"
        lines.append(f"<div>{mark} <b>{html.escape(str(r['check']))}</b>: "
                     f"<small>{html.escape(plain_text(str(r['check'])))}</small></div>")
    return "".join(lines)


def saved_note(verdict: str, created_at: str) -> str:
    """``"saved plausible at 2026-12-01 23:20:05 UTC"``: what the store holds for this map, and since when."""
    try:
        at = datetime.fromisoformat(created_at).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        at = created_at
    return f"saved {verdict.replace('_', ' ')} at {at}"
