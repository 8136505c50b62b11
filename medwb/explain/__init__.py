"""Explanations: attribution maps (``attributions``), overlays and NIfTI export (``overlays``), sanity and
faithfulness checks (``checks``) and the ``medwb explain`` pipeline (``run``)."""
from __future__ import annotations

from medwb.explain.attributions import METHOD_NAMES, attribute, default_target_layer

__all__ = ["METHOD_NAMES", "attribute", "default_target_layer"]
