"""A small but real study for the report tests: PneumoniaMNIST, two rounds, labels with mixed provenance.

Built only through the team contracts (data layer, study store, models) so the report is tested on what the
active-learning loop writes, without depending on the loop itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medwb.data import open_dataset
from medwb.models import TrainConfig, build_classifier, predict_proba, save_checkpoint, train
from medwb.store import Study


def build_small_study(samples: Path, folder: Path, *, per_round: int = 60, rounds: int = 2, seed: int = 0) -> Path:
    """Rounds of random selection; round 1 labels by a human, later rounds mix auto-accepted and corrected
    pre-labels; 20 cases get a second annotator (agreement)."""
    data = samples / "classification_2d" / "pneumoniamnist.npz"
    ds = open_dataset(data, progress=False)
    study = Study.create(folder, dataset_path=str(data), task=ds.task, classes=ds.classes, name="report-test")
    study.add_cases(ds.cohort)
    Xtr, ytr, ids = ds.arrays("train", max_cases=600, seed=seed)
    Xv, yv, _ = ds.arrays("val", max_cases=200, seed=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    labelled: list[int] = []
    model = None
    version = None
    for r in range(1, rounds + 1):
        pick = order[(r - 1) * per_round: r * per_round]
        study.start_round(r, "random", {"k": per_round, "seed": seed}, [ids[i] for i in pick],
                          [0.0] * len(pick))
        pre = predict_proba(model, Xtr[pick]).argmax(1) if model is not None else None
        for j, i in enumerate(pick):
            truth = int(ytr[i])
            if pre is None:
                study.add_label(ids[i], value=truth, source="human", annotator="reader_a", seconds=4.0, round=r)
            elif pre[j] == truth and j % 2 == 0:
                study.add_label(ids[i], value=truth, source="auto", annotator=f"model:{version}", round=r,
                                model_version=version)
            else:
                src = "human" if pre[j] == truth else "corrected"
                study.add_label(ids[i], value=truth, source=src, annotator="reader_a", seconds=3.0, round=r,
                                model_version=version)
        labelled += list(pick)
        model = build_classifier(2, 1, 2, seed=seed)
        res = train(model, Xtr[labelled], ytr[labelled], Xv, yv, task="classification",
                    config=TrainConfig(epochs=6, min_epochs=2, patience=3, seed=seed), progress=False)
        model = res.model
        ckpt = save_checkpoint(model, folder / "models" / f"round_{r:03d}.pt", {"round": r, "seed": seed})
        version = study.add_model(r, ckpt, {"n_labeled": float(len(labelled)), "best_epoch": float(res.best_epoch),
                                            "val_auc": float(res.val_metric)})
        study.finish_round(r)
    for i in order[:20]:  # a second reader on 20 of the first round's cases
        study.add_label(ids[i], value=int(ytr[i]), source="human", annotator="reader_b", seconds=5.0)
    study.close()
    return folder


_BUILT: dict[str, Path] = {}


def built_report(tmp_path_factory, samples: Path) -> Path:
    """One small study and its full report (HTML + PDF), built once per test session and shared by modules."""
    if "report" not in _BUILT:
        from medwb.report.build import build_report

        root = tmp_path_factory.mktemp("report")
        study = build_small_study(samples, root / "study")
        build_report(study, root / "run1", pdf=True, n_bootstrap=200, seed=0)
        _BUILT["study"], _BUILT["report"] = study, root / "run1"
    return _BUILT["report"]
