"""The review queue's words: class names as the menu shows them, what a key means, the session's decision list.

Pure functions (no ipywidgets) so :class:`medwb.ui.widgets.review.ReviewQueue` stays one screen of logic and the
key mapping can be read and tested on its own. One rule everywhere: a class is named ``"<value>: <name>"``, the
same string the class menu shows, so the digit a person reads in the menu is the digit they type.
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: single-letter keys of the review queue and what they do (digits are the class numbers as shown)
LETTER_KEYS = {"a": "accept", "r": "reject", "f": "flag", "u": "undo"}


def class_label(classes: Mapping[int, str], value: int) -> str:
    """The class as the menu shows it (``"1: pneumonia"``): status lines and the decision list use the same words."""
    return f"{int(value)}: {classes.get(int(value), '?')}"


def typeable_classes(classes: Mapping[int, str]) -> list[int]:
    """Class values that one digit key can choose (0-9): the key is the class number shown in the menu."""
    return sorted(int(v) for v in classes if 0 <= int(v) <= 9)


def digits_text(classes: Mapping[int, str]) -> str:
    """``"0-1"`` for contiguous class numbers, ``"1, 3, 4"`` otherwise ("" when no class fits one digit)."""
    vs = typeable_classes(classes)
    if not vs:
        return ""
    if len(vs) > 1 and vs == list(range(vs[0], vs[-1] + 1)):
        return f"{vs[0]}-{vs[-1]}"
    return ", ".join(str(v) for v in vs)


def key_help(classes: Mapping[int, str], segmentation: bool) -> str:
    """The keys box's placeholder: what each key does, digits named as the class numbers of the menu."""
    letters = "a accept / r reject / f flag / u undo"
    digits = "" if segmentation else digits_text(classes)
    return letters + (f" / {digits}: class number as shown" if digits else "")


def digit_class(key: str, classes: Mapping[int, str]) -> int | None:
    """The class value a digit key chooses: the class whose shown number equals the digit (None: no such class)."""
    if len(key) != 1 or not key.isdigit():
        return None
    return int(key) if int(key) in typeable_classes(classes) else None



def proposal_text(proposal: Any, classes: Mapping[int, str], segmentation: bool) -> str:
    """The case title's pre-label part: the class in the menu's words (so the key to type is the number read)."""
    if proposal is None:
        if segmentation:
            return "no pre-label: reject or flag it, or give a mask (change(mask=...))"
        return f"no pre-label: <b>choose the class</b> (menu + set class, or key {digits_text(classes)})"
    if segmentation:
        return f"proposed mask: {int((np.asarray(proposal) != 0).sum())} foreground voxels"
    return f"proposed class: <b>{html.escape(class_label(classes, int(proposal)))}</b>"


def key_refusal(key: str, classes: Mapping[int, str], segmentation: bool) -> str:
    """Why a key saved nothing: a digit that is no class number names the classes; any other key lists the keys."""
    if key.isdigit() and not segmentation:
        shown = ", ".join(class_label(classes, v) for v in sorted(classes))
        return f"key {key!r}: there is no class {key} ({shown}); nothing saved. Fix: type the class number as shown"
    return f"key {key!r} does nothing; nothing saved. Keys: {key_help(classes, segmentation)}"


def decision_text(d: Mapping[str, Any], classes: Mapping[int, str]) -> str:
    """What a decision stored, in the menu's words: ``"1: pneumonia (corrected)"``, ``"mask (human)"``, ``"rejected"``."""
    if d.get("value") is not None:
        return f"{class_label(classes, d['value'])} ({d['source']})"
    if d.get("label_id") is not None:
        return f"mask ({d['source']})"
    return "rejected" if d["action"] == "reject" else "flagged"


def decisions_html(decisions: Sequence[Mapping[str, Any]], classes: Mapping[int, str]) -> str:
    """This session's decisions, newest first (case, class, source, seconds on screen, clock time): what the
    reader has done so far and what undo would take back next."""
    if not decisions:
        return ""
    rows = []
    for d in reversed(decisions):
        cls = class_label(classes, d["value"]) if d.get("value") is not None else (
            "mask" if d.get("label_id") is not None else "-")
        src = d.get("source") or ("rejected" if d["action"] == "reject" else "flagged") + ": review queue"
        rows.append(f"<tr><td><code>{html.escape(str(d['case_id']))}</code></td><td>{html.escape(cls)}</td>"
                    f"<td>{html.escape(src)}</td><td>{d['seconds']:.1f} s</td><td>{d.get('at', '')}</td></tr>")
    return (f"<details open><summary>decisions this session ({len(decisions)}; u / undo takes back the top one)"
            "</summary><table><tr><th>case</th><th>class</th><th>source</th><th>time</th><th>at</th></tr>"
            + "".join(rows) + "</table></details>")


def confidence_text(confidence: float | None, before: str = "", after: str = "", *,
                    n_classes: int | None = None) -> str:
    """``before + "confidence 0.912" + after``, or "" when there is no (finite) confidence. With ``n_classes``
    (on screen, HTML) a confidence near chance carries a visible warning: the model is unsure, so its
    pre-label must be checked rather than accepted."""
    if confidence is None or not math.isfinite(float(confidence)):
        return ""
    c = float(confidence)
    text = f"{before}confidence {c:.3f}{after}"
    if n_classes and near_chance(c, n_classes):
        text += (f" <b style='color:#b00'>&#9888; near chance ({1 / n_classes:.2f}): the model is unsure, check "
                 "the image before accepting</b>")
    return text


def near_chance(confidence: float, n_classes: int, margin: float = 0.2) -> bool:
    """Whether a top-class confidence is within ``margin`` of the way from chance (1/K) to certainty (1)."""
    chance = 1.0 / max(int(n_classes), 1)
    return chance < 1 and (float(confidence) - chance) / (1 - chance) <= margin


def error_html(text: str) -> str:
    """A refusal on a status line: red and escaped, so an error message never adds markup to the page."""
    return f"<span style='color:#b00'>{html.escape(str(text), quote=False)}</span>"
