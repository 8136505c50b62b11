"""The store's class evidence (issue 14: "the model's uncertainty shown for classification too"): a proposed
classification case's MC-dropout class probabilities (mean, spread) and saliency map are kept with their round and
model version, the map written atomically through the store's writer (encrypted, under a pseudonymous name, in an
encrypted study) and read back; bad input and a missing file are clear errors naming the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medwb.errors import DataError, StoreError
from medwb.store import Study


def test_class_evidence_round_trips_encrypted_when_the_study_is(tmp_path: Path, samples: Path,
                                                                study_encryption: str) -> None:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.data import open_dataset
    from medwb.models import build_classifier, save_checkpoint
    from medwb.store.files import is_encrypted

    ds = open_dataset(tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=4, n_val=2, n_test=2),
                      progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(ds.path), task=ds.task, classes=ds.classes)
    study.add_cases(ds.cohort)
    cid, other = ds.case_ids("train")[:2]
    ck = save_checkpoint(build_classifier(2, 1, 2, seed=0, channels=(4, 8)), study.checkpoint_path(1), {"round": 1})
    version = study.add_model(1, ck, {})
    sal = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    path = study.save_class_evidence(2, cid, [0.3, 0.7], [0.05, 0.05], passes=20, model_version=version,
                                     saliency=sal, saliency_class=1)
    assert is_encrypted(path.read_bytes()) == (study_encryption == "encrypted")
    assert (cid in path.name) == (study_encryption == "plain")  # no case id in an encrypted file name
    assert path.parent == study.layout.maps / "saliency"
    ev = study.case_class_evidence(2, cid)
    assert ev.mean.tolist() == [0.3, 0.7] and ev.std.tolist() == [0.05, 0.05] and ev.passes == 20
    assert ev.model_version == version and ev.map_class == 1 and ev.map.dtype == np.float32 and ev.map.shape == (28, 28)
    assert np.allclose(ev.map, sal, atol=1e-3)  # float16 on disk
    assert study.case_class_evidence(3, cid) is None and study.case_class_evidence(2, other) is None
    assert study.save_class_evidence(2, other, [0.5, 0.5], [0.0, 0.0], passes=1, model_version=version) is None
    assert study.case_class_evidence(2, other).map is None  # probabilities without a map
    with pytest.raises(DataError, match="without its class"):
        study.save_class_evidence(2, cid, [0.3, 0.7], [0.1, 0.1], passes=2, model_version=version, saliency=sal)
    rows = study.class_evidence(2)
    assert rows["case_id"].tolist() == sorted([cid, other]) and set(rows["model_version"]) == {version}
    assert rows.set_index("case_id").loc[cid, "map_path"] == str(path)

    with pytest.raises(StoreError, match="not registered.*Fix"):
        study.save_class_evidence(2, cid, [0.3, 0.7], [0.1, 0.1], passes=2, model_version="r9-v9")
    with pytest.raises(DataError, match="not probabilities"):
        study.save_class_evidence(2, cid, [3.0, -2.0], [0.1, 0.1], passes=2, model_version=version)
    with pytest.raises(DataError, match="one value per class"):
        study.save_class_evidence(2, cid, [0.3, 0.7], [0.1], passes=2, model_version=version)
    with pytest.raises(DataError, match="unknown case id"):
        study.save_class_evidence(2, "no-such-case", [0.3, 0.7], [0.1, 0.1], passes=2, model_version=version)
    path.unlink()
    with pytest.raises(DataError, match=f"{path.name}.*missing.*Fix: restore"):
        study.case_class_evidence(2, cid)
    study.close()
