"""A classification round's model evidence (issue 14: "the model's uncertainty shown for classification too"): when
the loop proposes a round with a model, each proposed case's MC-dropout class probabilities and the Grad-CAM of its
pre-label at the image's own size are stored with the round and model version, so a reader's page, which loads no
model, can show them. The cold-start round (no model) stores none; a reopened round keeps what it has."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_a_classification_round_stores_probabilities_and_saliency_for_each_proposed_case(
        samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.oracle import simulated_oracle
    from medwb.data.dataset import resize
    from medwb.explain.attributions import gradcam
    from medwb.models import TrainConfig
    from medwb.models.uncertainty import mc_dropout_proba

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, batch_size=4)
    loop.train_config = TrainConfig(epochs=1, min_epochs=1, batch_size=4, patience=1, seed=0)
    loop.mc_passes = 5
    loop.propose()  # round 1, no model: nothing to store
    assert len(study.class_evidence()) == 0
    first = loop.run_round(simulated_oracle(ds))
    import medwb.models.uncertainty as uncertainty

    calls: list[int] = []  # rows of each MC-dropout call while proposing round 2
    real = uncertainty.mc_dropout_proba
    monkeypatch.setattr(uncertainty, "mc_dropout_proba", lambda m, X, **kw: calls.append(len(X)) or real(m, X, **kw))
    batch = loop.propose()  # round 2, pre-labelled by the round-1 model
    monkeypatch.undo()
    # one MC-dropout run over the batch serves the auto-accept threshold and the readers' probabilities
    assert calls.count(len(batch)) == 1, calls
    ids = [str(c) for c in batch["case_id"]]
    rows = study.class_evidence(2)
    assert rows["case_id"].tolist() == sorted(ids) and set(rows["model_version"]) == {first.model_version}
    assert set(rows["passes"]) == {5}

    model, _ = loop.current_model()
    X, _, pool = loop.arrays("train")
    Xb = X[[pool.index(c) for c in ids]]
    mc = mc_dropout_proba(model, Xb, passes=5, seed=loop.seed)  # the loop's passes and seed: the same numbers
    cams = gradcam(model, Xb, np.array(batch["prelabel"], dtype=np.int64), progress=False)
    for i, cid in enumerate(ids):
        ev = study.case_class_evidence(2, cid)
        assert ev.round == 2 and ev.model_version == first.model_version
        assert ev.map_class == int(batch["prelabel"].iloc[i])  # the map explains the proposed class
        assert np.allclose(ev.mean, mc[:, i].mean(0), atol=1e-6) and np.allclose(ev.std, mc[:, i].std(0), atol=1e-6)
        assert abs(ev.mean.sum() - 1) < 1e-5 and len(ev.mean) == len(ds.classes)
        native = ds.load_image(cid).shape[1:]
        assert ev.map.shape == native and ev.map.max() > 0, ev.map.max()  # the image's own grid
        assert np.allclose(ev.map, resize(cams[i], native, "image")[0], atol=2e-3)  # Grad-CAM of the pre-label
    when = rows["created_at"].tolist()
    loop.propose()  # reopened: kept, not recomputed
    assert study.class_evidence(2)["created_at"].tolist() == when
    study.close()
