"""Explanations: attribution maps (``attributions``), sanity and faithfulness checks (``checks``), export of
maps as overlay figures, PNG and NIfTI (``export``) and the ``medwb explain`` pipeline (``run``). No widgets:
the live viewers are ``medwb.ui.explain_view`` and the verdict panel ``medwb.ui.widgets.verdict``.

Nothing is imported here eagerly: the review-only verdict panel uses ``export`` on a laptop without
loading torch or the model.
"""
from __future__ import annotations

from typing import Any

__all__ = ["METHOD_NAMES", "attribute", "default_target_layer", "run_explain"]


def __getattr__(name: str) -> Any:
    if name in ("METHOD_NAMES", "attribute", "default_target_layer"):
        from medwb.explain import attributions

        return getattr(attributions, name)
    if name == "run_explain":
        from medwb.explain.run import run_explain

        return run_explain
    raise AttributeError(name)
