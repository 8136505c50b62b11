"""Report sections (DataFrames only) on real data: the splits and arrays the report scores are the loop's own,
subgroups come from the data layer's one definition, and the tables the notebook shows come from tested code."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb import metrics
from medwb.data import open_dataset
from medwb.data.splits import SplitArrays
from medwb.report import sections as C
from medwb.store import Study

ROOT = Path(__file__).resolve().parents[2]


def _evaluation(y: np.ndarray, proba: np.ndarray, ids: list[str] | None = None,
                classes: dict[int, str] | None = None) -> C.Evaluation:
    ids = ids or [f"c{i}" for i in range(len(y))]
    return C.Evaluation("v1", 1, Path("m.pt"), {}, ids, y, proba, None, classes or {0: "normal", 1: "pneumonia"})


def _pneumonia_eval(samples: Path) -> C.Evaluation:
    y = np.load(samples / PNEUMONIA)["test_labels"].ravel().astype(int)[:300]
    rng = np.random.default_rng(0)
    p1 = 1 / (1 + np.exp(-(2.0 * (y - 0.5) * 2 + rng.normal(0, 1.5, y.size))))
    return _evaluation(y, np.stack([1 - p1, p1], 1))


def test_report_and_explain_never_import_the_loop() -> None:
    """Lower rooms read what the loop recorded (checkpoint meta, store, data splits); they never import it."""
    for folder in ("report", "explain"):
        for py in sorted((ROOT / "medwb" / folder).glob("*.py")):
            tree = ast.parse(py.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [m for m in names if m.startswith("medwb.al.loop")], py
    code = ("import sys, medwb.report.sections, medwb.report.build, medwb.explain.run, medwb.explain.export; "
            "print('medwb.al.loop' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_carved_splits_and_arrays_are_the_loops(samples: Path, tmp_path: Path) -> None:
    """CHASE_DB1 has no val split: the report carves the same ids as the loop and builds the same arrays."""
    from medwb.al.loop import ActiveLearningLoop

    ds = open_dataset(samples / "segmentation_2d" / "chase_db1", progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(ds.path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, progress=False, max_pool=10, pretrain=False, semi=False)
    study.start_round(1, "random", {"k": 2, "pool_size": 10}, [], [])
    splits = C.study_splits(study, ds, {})
    assert splits == loop.split_ids() and len(splits["train"]) == 10 and splits["val"]
    X, y, ids = SplitArrays(ds, splits, loop.size)["val"]
    Xl, yl, idsl = loop.arrays("val")
    assert ids == idsl
    np.testing.assert_array_equal(X, Xl)
    np.testing.assert_array_equal(y, yl)
    study.close()


def test_split_sources_in_order_meta_then_store_then_carved(samples: Path, tmp_path: Path) -> None:
    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=20, n_val=6, n_test=8)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    carved = C.study_splits(study, ds, {})
    assert carved["test"] == ds.case_ids("test") and carved["train"] == ds.case_ids("train")
    study.save_splits({"train": carved["train"][:5], "val": carved["val"], "test": carved["test"][:3]})
    assert C.study_splits(study, ds, {})["test"] == carved["test"][:3]
    meta = {"splits": {"train": carved["train"][:2], "val": carved["val"][:2], "test": carved["test"][:1]}}
    assert C.study_splits(study, ds, meta)["test"] == carved["test"][:1]
    study.close()


def test_subgroups_come_from_the_data_layer_on_hc18_like_data(samples: Path) -> None:
    """HC18's own columns (pixel size, head circumference) are never subgroups; a metadata table's are, the
    report keeping those with 2..12 levels, and a segmentation study gets Dice per subgroup value."""
    src = samples / "segmentation_2d" / "hc18"
    ds0 = open_dataset(src, progress=False)
    assert ds0.subgroup_columns() == [] and "pixel_size_mm" in ds0.cohort
    ids = ds0.cohort["case_id"].tolist()
    meta = pd.DataFrame({"case_id": ids, "sex": ["F", "M"] * (len(ids) // 2) + ["F"] * (len(ids) % 2),
                         "age": np.arange(len(ids)) + 20, "patient_id": [i.split("_")[0] for i in ids],
                         "split": ds0.cohort["split"].tolist()})  # a table passed in replaces metadata.csv
    ds = open_dataset(src, metadata=meta, progress=False)
    assert ds.subgroup_columns() == ["sex", "age"]  # patient_id is bookkeeping
    assert ds.subgroup_columns(max_levels=C.SUBGROUP_MAX_LEVELS) == ["sex"]  # age: too many levels to split on
    assert "subgroup columns" in set(C.dataset_overview(ds, src)["item"])
    X, y, tids = ds.arrays("test", size=(32, 32))
    proba = np.eye(2, dtype=np.float32)[y[:, 0]].transpose(0, 3, 1, 2)  # a perfect segmenter
    ev = C.Evaluation("v", 1, Path("m.pt"), {}, tids, y, proba, (32, 32), dict(ds.classes))
    sub = C.subgroup_analysis(ev, ds, n_bootstrap=50, random_state=0)
    assert set(sub["column"]) == {"sex"} and set(sub["metric"]) == {"dice"}
    assert sub["estimate"].tolist() == [1.0] * len(sub) and sub["n"].sum() == len(tids)
    assert C.subgroup_analysis(ev, ds0, n_bootstrap=50, random_state=0).empty


def test_classification_sections_match_the_metrics(samples: Path) -> None:
    ev = _pneumonia_eval(samples)
    cm, table = C.confusion_table(ev)
    assert cm.sum() == len(ev.y_true) and table.columns.tolist() == ["true", "normal", "pneumonia"]
    assert table.set_index("true").to_numpy().tolist() == cm.tolist()
    wrong = C.misclassified_table(ev)
    assert len(wrong) == int(cm.sum() - np.trace(cm))
    assert wrong["confidence"].is_monotonic_decreasing and (wrong["true"] != wrong["predicted"]).all()
    assert C.class_aucs(ev)[1] == pytest.approx(metrics.auc_binary(ev.y_true, ev.proba[:, 1]))
    cal = C.calibration(ev, n_bootstrap=1000, random_state=0)
    assert cal.ece == metrics.ece(ev.y_true, ev.proba) == pytest.approx(cal.table.loc[0, "estimate"])
    e, lo, hi = metrics.bootstrap_ci(metrics.ece, ev.y_true, ev.proba, n_bootstrap=C.ECE_BOOTSTRAP,
                                     stratify=ev.y_true, random_state=0)
    assert cal.table.loc[0, ["estimate", "ci_low", "ci_high"]].tolist() == [e, lo, hi]  # capped at 300 draws
    assert cal.reliability["count"].sum() == len(ev.y_true)
    mt = C.metrics_table(ev, n_bootstrap=100, random_state=0)
    sub = pd.DataFrame({"metric": ["accuracy", "auc"], "estimate": [0.5, 0.6]})
    assert C.subgroup_headline(sub, mt) == ("auc", float(mt.loc[mt["metric"] == "auc", "estimate"].iloc[0]))


def test_xai_learning_curve_and_checklist_sections(samples: Path, tmp_path: Path) -> None:
    checks = pd.DataFrame({"method": ["gradcam", "gradcam", "saliency"], "check": ["randomization", "deletion",
                           "randomization"], "passed": [True, False, "true"], "status": ["pass", "FAIL", "pass"],
                           "extra": [1, 2, 3]})
    assert C.failed_checks(checks) == ["gradcam / deletion"]
    assert C.failed_checks(checks.drop(columns="passed")) is None
    assert C.checks_summary(checks).columns.tolist() == ["method", "check", "status"]
    curves = pd.DataFrame({"strategy": ["random", "random", "full"], "seed": 0, "round": [1, 2, 0],
                           "n_labeled": [10, 20, 100], "fraction_labeled": [0.1, 0.2, 1.0], "metric": "auc",
                           "value": [0.7, 0.8, 0.9]})
    budget, reach = C.labels_to_reach(curves)
    assert budget == 0.2 and len(reach)
    assert C.labels_to_reach(curves[curves["strategy"] != "full"]) is None
    # held_out.csv beside the simulation's curves.csv (a --max-pool run): read back; absent or empty: None
    sim = tmp_path / "sim"
    sim.mkdir()
    curves.to_csv(sim / "curves.csv", index=False)
    assert C.held_out_curves(sim / "curves.csv") is None and C.held_out_curves(None) is None
    curves.iloc[:0].to_csv(sim / "held_out.csv", index=False)
    assert C.held_out_curves(sim / "curves.csv") is None
    curves.assign(value=[0.8, 0.9, 0.95]).to_csv(sim / "held_out.csv", index=False)
    held = C.held_out_curves(sim / "curves.csv")
    assert held["value"].tolist() == [0.8, 0.9, 0.95] and C.labels_to_reach(held) is not None
    ds = open_dataset(samples / PNEUMONIA, progress=False)
    agree = pd.DataFrame({"estimate": [np.nan]})
    cl = C.report_checklist(ds, agreement=agree, checks=checks, overlays=[], verdicts=pd.DataFrame(),
                            curves=curves)
    status = cl.set_index("topic")["status"]
    assert status["Performance in subgroups / fairness"] == "not applicable to this data"
    assert status["Methods of explainability and their validation"] == "answered"
    assert status["Annotation tools, annotator qualifications, inter-rater variability"] == \
        "not available in this study"
    p = C.report_parameters(Path("s"), None, Path("c.csv"), None, 0, 200)
    assert p == {"study": "s", "dataset": None, "simulation_curves": "c.csv", "explain_dir": None,
                 "class_sweep": None, "seed": 0, "n_bootstrap": 200}


def test_the_training_recipe_names_the_candidate_kept_and_why() -> None:
    """What the report says of a round's model, for the metric sets fit_round writes (a self-training round's are
    exercised on real fits in tests/al/test_self_training.py)."""
    fixmatch = {"semi": 1.0, "val_score_semi": 0.912, "val_score_supervised": 0.905, "val_auc": 0.95}
    assert C.training_recipe(fixmatch) == ("semi-supervised (FixMatch on the labels + the unlabelled pool), kept "
                                           "over supervised training (validation score 0.912 vs 0.905)")
    lost = {**fixmatch, "semi": 0.0, "val_score_semi": 0.871}
    assert C.training_recipe(lost) == "supervised (its FixMatch candidate validated 0.871 vs 0.905: not kept)"
    assert C.training_recipe({"semi": 1.0, "val_score_semi": 0.8, "val_score_supervised": 0.79, "val_dice": 0.8},
                             short=True) == "mean teacher"
    warm = {"semi": 0.0, "warm_start": 1.0, "warm_passes": 40.0, "val_auc": 0.99}  # the loop's warm_start
    assert C.training_recipe(warm) == "supervised, continued from the previous round's model (40 passes over the labels)"
    assert C.training_recipe(warm, short=True) == "supervised, continued"
    # a student whose teacher was the FixMatch candidate (the student's own "semi" is 0)
    student = {**fixmatch, "semi": 0.0, "semi_teacher": 1.0, "self_trained": 1.0, "pseudo_labels": 812.0,
               "pseudo_coverage": 0.41, "val_score_student": 0.93, "val_score_teacher": 0.912}
    said = C.training_recipe(student)
    assert said.startswith("self-trained student: the expert labels + 812 pseudo-labels of its teacher (41% of")
    assert said.endswith("the teacher: semi-supervised (FixMatch on the labels + the unlabelled pool), kept over "
                         "supervised training (validation score 0.912 vs 0.905)")
    table = C.models_summary(pd.DataFrame([{"version": "v1", "round": 1, "n_labeled": 20,
                                            "training": C.training_recipe(student, short=True)}]))
    assert list(table.columns[:4]) == ["version", "round", "n_labeled", "training"]
    assert table["training"].iloc[0] == "self-trained student (+812 pseudo-labels)"
