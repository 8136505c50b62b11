"""What a pool-wide job runs: a model from a checkpoint file, a study folder (its latest registered model) or a
module already in memory, and the grid it was trained on.

Why here: ``medwb score`` and ``medwb explain`` both take MODEL_OR_STUDY; one resolution rule, below both.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.store import Study


def resolve_model(model: str | Path | nn.Module) -> tuple[nn.Module, dict[str, Any], Study | None]:
    """(model, checkpoint meta, Study or None) from a checkpoint file, a study folder (its latest registered
    model) or an already built module."""
    if isinstance(model, nn.Module):
        return model, {}, None
    from medwb.models import load_checkpoint

    p = Path(model)
    if p.is_dir():
        from medwb.store import Study, layout

        if not Study.exists(p):
            raise DataError(p, f"is neither a checkpoint file nor a study folder (no {layout.DB_NAME})",
                            "pass a .pt checkpoint or a study folder created by medwb")
        study = Study.open(p)
        models = study.models()
        if models.empty:
            raise DataError(p, "the study has no trained model yet", "run an active-learning round first")
        row = models.iloc[-1]
        m, meta = load_checkpoint(row["checkpoint_path"])
        meta = {**meta, "model_version": str(row["version"])}
        return m, meta, study
    m, meta = load_checkpoint(p)
    return m, meta, None


def model_input_size(ds: Dataset, meta: dict[str, Any]) -> tuple[int, ...] | None:
    """The grid the model was trained on: the checkpoint's ``size`` if stored, else the data's default
    (:func:`medwb.data.dataset.default_size`, what the loop trains at when not told otherwise)."""
    if meta.get("size"):
        return tuple(int(s) for s in meta["size"])
    from medwb.data.dataset import default_size

    return default_size(ds)
