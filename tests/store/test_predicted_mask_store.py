"""The store's predicted masks (issue 14): the model's mask of a proposed segmentation case is checked like a label
mask, written atomically through the store's mask writer (encrypted, under a pseudonymous name, in an encrypted
study) with its round and model version, and read back as int64; bad input is a clear error naming the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medwb.errors import DataError, StoreError
from medwb.store import Study


def test_predicted_masks_are_written_by_the_store_encrypted_when_the_study_is(
        tmp_path: Path, hc18, study_encryption: str) -> None:
    from medwb.models import build_segmenter, save_checkpoint
    from medwb.store.files import is_encrypted

    study = Study.create(tmp_path / "s", dataset_path=str(hc18.path), task=hc18.task, classes=hc18.classes)
    study.add_cases(hc18.cohort)
    cid = next(c for c in hc18.case_ids() if hc18.load_mask(c) is not None)
    pred = np.asarray(hc18.load_mask(cid))[0]
    ck = save_checkpoint(build_segmenter(2, 1, 2, seed=0, channels=(4, 8)), study.checkpoint_path(1), {"round": 1})
    version = study.add_model(1, ck, {})
    path = study.save_predicted_mask(2, cid, pred, model_version=version)
    assert is_encrypted(path.read_bytes()) == (study_encryption == "encrypted")
    assert (cid in path.name) == (study_encryption == "plain")  # no case id in an encrypted name
    assert path.parent == study.layout.masks / "prelabels" and study.predicted_mask(2, cid).dtype == np.int64
    assert np.array_equal(study.predicted_mask(2, cid), pred) and study.predicted_mask(3, cid) is None
    row = study.predicted_masks().iloc[0]
    assert (row["round"], row["case_id"], row["model_version"]) == (2, cid, version)
    assert study.predicted_uncertainty(2, cid) is None  # no map given: none
    ent = np.linspace(0, 0.7, pred.size).reshape(pred.shape)
    study.save_predicted_mask(2, cid, pred, model_version=version, uncertainty=ent)  # with the model's entropy map
    umap = study.layout.uncertainty_map(2, cid)
    assert umap.parent == study.layout.maps / "uncertainty" and (cid in umap.name) == (study_encryption == "plain")
    assert is_encrypted(umap.read_bytes()) == (study_encryption == "encrypted")
    got = study.predicted_uncertainty(2, cid)
    assert got.dtype == np.float32 and got.shape == pred.shape and np.allclose(got, ent, atol=1e-3)
    assert study.predicted_uncertainty(3, cid) is None
    with pytest.raises(DataError, match="uncertainty map.*Fix: pass the model's entropy map"):
        study.save_predicted_mask(2, cid, pred, model_version=version, uncertainty=ent[:-1])
    study.save_predicted_mask(2, cid, pred, model_version=version)  # a mask without a map: the old map goes
    assert not umap.exists() and study.predicted_uncertainty(2, cid) is None

    with pytest.raises(StoreError, match="not registered.*Fix"):
        study.save_predicted_mask(2, cid, pred, model_version="r9-v9")
    with pytest.raises(DataError, match="outside the classes"):
        study.save_predicted_mask(2, cid, pred + 5, model_version=version)
    with pytest.raises(DataError, match="unknown case id"):
        study.save_predicted_mask(2, "no-such-case", pred, model_version=version)
    path.unlink()
    with pytest.raises(DataError, match=f"{path.name}.*missing.*Fix: restore"):
        study.predicted_mask(2, cid)
    study.close()
