"""The model's evidence on a classification case as a reader sees it: each class's probability with its MC-dropout
spread (class names, bars) and the saliency map beside the image.

Why: a pre-label with one confidence number hides whether the model hesitated between two classes, and what it
looked at. The loop stored both when it proposed the round (``Study.case_class_evidence``,
:mod:`medwb.al.class_evidence`), so the review app's pages (which load no model) and notebook 02's queue read the
same thing from the store. When the top two classes lie within the spread of the MC passes the panel says the
model cannot tell them apart; a confidence near chance is warned about once, in the case's title
(:func:`medwb.ui.widgets.review_text.confidence_text`). A case without stored evidence (a round before any model,
a study made before it was stored) shows what exists and no panel; an unreadable map shows the probabilities and
one sentence naming the file and the fix.
"""
from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

from medwb.errors import MedwbError
from medwb.store import Study
from medwb.ui.widgets.case_view import MapPanel
from medwb.ui.widgets.review_text import class_label, error_html

#: how much of the image shows through the saliency map (the map's meaning is where on the image it lies)
SALIENCY_BLEND = 0.5
MAP_TITLE = "<b>where the model looked</b>"


def within_spread(mean: np.ndarray, std: np.ndarray) -> bool:
    """Whether the two most probable classes are within the MC spread of each other: the gap between their mean
    probabilities is at most the sum of their standard deviations over the passes."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if len(m) < 2:
        return False
    a, b = np.argsort(-m)[:2]
    return bool(m[a] - m[b] <= s[a] + s[b])


def bar_html(mean: float, std: float, width_px: int = 160) -> str:
    """One probability as a bar with its MC spread (mean +- sd) drawn as a bracket over it."""
    lo, hi = max(0.0, mean - std), min(1.0, mean + std)
    return (f"<div style='position:relative;width:{width_px}px;height:12px;background:#e8e8e8'>"
            f"<div style='width:{100 * mean:.1f}%;height:100%;background:#3572c6'></div>"
            f"<div style='position:absolute;top:0;left:{100 * lo:.1f}%;width:{100 * (hi - lo):.1f}%;height:100%;"
            "border-left:2px solid #111;border-right:2px solid #111;box-sizing:border-box'></div></div>")


def probabilities_html(classes: Mapping[int, str], mean: np.ndarray, std: np.ndarray, passes: int) -> str:
    """The class probabilities as the reader sees them: one row per class (its name as the class menu shows it,
    a bar, "mean +- sd"), most probable first, and a warning when the top two lie within the MC spread."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    shown = [int(v) for v in np.argsort(-m, kind="stable") if int(v) in classes or m[v] >= 0.005]
    rows = "".join(f"<tr><td style='padding-right:6px'>{html.escape(class_label(classes, v))}</td>"
                   f"<td>{bar_html(float(m[v]), float(s[v]))}</td>"
                   f"<td style='padding-left:6px;font-family:monospace'>{m[v]:.2f} &plusmn; {s[v]:.2f}</td></tr>"
                   for v in shown)
    text = (f"<div><b>class probabilities</b> <small>(mean &plusmn; sd of {int(passes)} MC-dropout passes)</small>"
            f"<table style='border-collapse:collapse'>{rows}</table>")
    if within_spread(m, s):
        a, b = (int(v) for v in np.argsort(-m, kind="stable")[:2])
        text += (f"<b style='color:#b00'>&#9888; the model cannot tell {html.escape(class_label(classes, a))} from "
                 f"{html.escape(class_label(classes, b))}: their probabilities overlap within its MC spread. Check "
                 "the image before accepting</b>")
    return text + "</div>"


def map_title(classes: Mapping[int, str], map_class: int | None) -> str:
    """The saliency map's heading, naming the class it explains."""
    if map_class is None:
        return MAP_TITLE
    return f"{MAP_TITLE} <small>(Grad-CAM of {html.escape(class_label(classes, map_class))})</small>"


def class_evidence_panel(study: Study, round: int | None, case_id: str) -> MapPanel | None:
    """What is drawn beside a classification case of round ``round``: its stored saliency map and class
    probabilities; None when none were stored. An unreadable map leaves the probabilities and says why."""
    if round is None:
        return None
    try:
        ev = study.case_class_evidence(int(round), str(case_id))
    except MedwbError as e:  # the map file: show the probabilities without it, and name the file and the fix
        rows = study.class_evidence(int(round))
        row = rows[rows["case_id"].astype(str) == str(case_id)].iloc[0]
        note = error_html(f"the map could not be shown: {e}")
        return MapPanel(None, MAP_TITLE, probabilities_html(study.classes, row["mean"], row["std"], row["passes"])
                        + note)
    if ev is None:
        return None
    return MapPanel(ev.map, map_title(study.classes, ev.map_class) if ev.map is not None else "",
                    probabilities_html(study.classes, ev.mean, ev.std, ev.passes), blend=SALIENCY_BLEND)


def latest_class_evidence_panel(study: Study, case_id: str) -> MapPanel | None:
    """:func:`class_evidence_panel` of the latest round that stored evidence for ``case_id`` (the adjudication
    view knows the case, not the round that proposed it); None when none was stored."""
    rows = study.class_evidence()
    rounds = rows.loc[rows["case_id"].astype(str) == str(case_id), "round"]
    return None if rounds.empty else class_evidence_panel(study, int(rounds.max()), case_id)
