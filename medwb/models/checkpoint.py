"""Checkpoints: weights plus the meta needed to use them again (builder args, input size, rounds, metrics).

Written and read through :mod:`medwb.store.files`, so a checkpoint inside an encrypted study (``models/``) is
AES-GCM encrypted when it is written and decrypted in memory when it is loaded.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medwb.errors import DataError, MedwbError
from medwb.models.networks import TrunkHeadNet, build_from_args
from medwb.store import files


def save_checkpoint(model: TrunkHeadNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write weights + ``meta`` (with the builder args under ``meta['build_args']`` and the model's decision rule,
    ``model.decision`` set by ``train``, as ``meta['threshold']`` / ``meta['class_offsets']``) to one ``.pt`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    meta["build_args"] = dict(model.build_args)
    for k, v in (getattr(model, "decision", None) or {}).items():  # the validation-chosen decision rule (train)
        meta.setdefault(k, v)
    payload = {"state_dict": model.state_dict(), "meta": meta, "format": "medwb-checkpoint-1"}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return files.write_bytes(path, buf.getvalue())  # atomic: a crash never leaves a half-written checkpoint


def load_checkpoint(path: str | Path) -> tuple[TrunkHeadNet, dict[str, Any]]:
    """Rebuild the network from the stored builder args and load its weights (eval mode); the decision rule
    chosen on validation (``meta["threshold"]`` / ``meta["class_offsets"]``) goes back on ``model.decision``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found", "pass the path written by save_checkpoint / train")
    try:
        blob = torch.load(io.BytesIO(files.read_bytes(path)), map_location="cpu", weights_only=True)
    except MedwbError:  # encrypted with a key that is not at hand
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(path, f"not a readable medwb checkpoint ({e.__class__.__name__})",
                        "re-save it with medwb.models.save_checkpoint") from e
    if not isinstance(blob, dict) or "meta" not in blob or "build_args" not in blob["meta"]:
        raise DataError(path, "checkpoint has no builder arguments", "re-save it with medwb.models.save_checkpoint")
    model = build_from_args(blob["meta"]["build_args"])
    model.load_state_dict(blob["state_dict"])
    model.decision = {k: blob["meta"][k] for k in ("threshold", "class_offsets") if blob["meta"].get(k) is not None}
    model.eval()
    return model, blob["meta"]
