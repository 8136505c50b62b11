"""The review queue's words: class names as the menu shows them and what a key means.

Pure functions (no ipywidgets) so :class:`medwb.ui.widgets.review.ReviewQueue` stays one screen of logic and the
key mapping can be read and tested on its own. One rule everywhere: a class is named ``"<value>: <name>"``, the
same string the class menu shows, so the digit a person reads in the menu is the digit they type.
"""
from __future__ import annotations

from collections.abc import Mapping

#: single-letter keys of the review queue and what they do (digits are the class numbers as shown)
LETTER_KEYS = {"a": "accept", "r": "reject", "f": "flag"}


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
    letters = "a accept / r reject / f flag"
    digits = "" if segmentation else digits_text(classes)
    return letters + (f" / {digits}: class number as shown" if digits else "")


def digit_class(key: str, classes: Mapping[int, str]) -> int | None:
    """The class value a digit key chooses: the class whose shown number equals the digit (None: no such class)."""
    if len(key) != 1 or not key.isdigit():
        return None
    return int(key) if int(key) in typeable_classes(classes) else None



def key_refusal(key: str, classes: Mapping[int, str], segmentation: bool) -> str:
    """Why a key saved nothing: a digit that is no class number names the classes; any other key lists the keys."""
    if key.isdigit() and not segmentation:
        shown = ", ".join(class_label(classes, v) for v in sorted(classes))
        return f"key {key!r}: there is no class {key} ({shown}); nothing saved. Fix: type the class number as shown"
    return f"key {key!r} does nothing; nothing saved. Keys: {key_help(classes, segmentation)}"
