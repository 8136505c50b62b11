"""Report statistics on known answers and on real data (PneumoniaMNIST labels, CHASE_DB1 observer masks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from _fixtures import noisy_scores, pneumonia_test_labels
from medwb import metrics
from medwb.report import stats


def test_bootstrap_ci_contains_estimate_and_is_seeded(samples):
    y = pneumonia_test_labels(samples)
    proba = noisy_scores(y)
    t1 = stats.classification_table(y, proba, n_bootstrap=200, random_state=3)
    t2 = stats.classification_table(y, proba, n_bootstrap=200, random_state=3)
    pd.testing.assert_frame_equal(t1, t2)
    assert set(t1["metric"]) == set(metrics.CLASSIFICATION_METRICS)
    assert (t1["ci_low"] <= t1["estimate"]).all() and (t1["estimate"] <= t1["ci_high"]).all()
    assert (t1["ci_high"] - t1["ci_low"] > 0).all()  # a real interval, not a point
    t3 = stats.classification_table(y, proba, n_bootstrap=200, random_state=4)
    assert not np.allclose(t1["ci_low"], t3["ci_low"])


def test_multiclass_macro_and_per_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    logits = rng.normal(0, 1, (150, 3))
    logits[np.arange(150), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = stats.classification_table(y, proba, class_names={0: "a", 1: "b", 2: "c"}, n_bootstrap=100)
    assert {"macro", "a", "b", "c", "all"} <= set(t["class"])
    macro = t[(t.metric == "sensitivity") & (t["class"] == "macro")]["estimate"].item()
    per = t[(t.metric == "sensitivity") & t["class"].isin(["a", "b", "c"])]["estimate"].mean()
    assert macro == pytest.approx(per)
    auc_macro = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert t[(t.metric == "auc") & (t["class"] == "macro")]["estimate"].item() == pytest.approx(auc_macro)


def _chase_masks(samples, names):
    root = samples / "segmentation_2d" / "chase_db1"
    a = [np.array(Image.open(root / "manual_1stHO" / f"{n}_1stHO.png")) > 0 for n in names]
    b = [np.array(Image.open(root / "manual_2ndHO" / f"{n}_2ndHO.png")) > 0 for n in names]
    return np.stack(a)[:, None].astype(np.int64), np.stack(b)[:, None].astype(np.int64)


def test_dice_hd95_on_real_chase_observer_masks(samples):
    names = ["Image_01L", "Image_01R", "Image_02L"]
    a, b = _chase_masks(samples, names)
    a, b = a[..., ::4, ::4].copy(), b[..., ::4, ::4].copy()  # 240x250: keeps HD95 quick
    df = stats.segmentation_case_metrics(a, b, n_classes=2, case_ids=names)
    assert list(df["case_id"]) == names
    # two experts on retinal vessels agree well but not perfectly (published inter-observer Dice ~0.7-0.8)
    assert ((df["dice"] > 0.5) & (df["dice"] < 0.95)).all()
    assert ((df["hd95"] > 0) & np.isfinite(df["hd95"])).all()
    for i in range(len(names)):  # monai's Dice equals the textbook formula on these masks
        inter = np.logical_and(a[i] > 0, b[i] > 0).sum()
        assert df["dice"].iloc[i] == pytest.approx(2 * inter / ((a[i] > 0).sum() + (b[i] > 0).sum()), abs=1e-6)
    same = stats.segmentation_case_metrics(a, a, n_classes=2)
    assert np.allclose(same["dice"], 1.0) and np.allclose(same["hd95"], 0.0)
    t = stats.mean_table(df, ["dice", "hd95"], n_bootstrap=200)
    assert (t["ci_low"] <= t["estimate"]).all() and (t["estimate"] <= t["ci_high"]).all()


def test_subgroup_table_and_learning_curves(samples):
    y = pneumonia_test_labels(samples)
    proba = noisy_scores(y)
    groups = pd.DataFrame({"half": np.where(np.arange(y.size) < y.size // 2, "first", "second"),
                           "tiny": ["x"] * 5 + ["y"] * (y.size - 5)})
    t = stats.subgroup_table(y, proba, groups, n_bootstrap=100)
    assert set(t["column"]) == {"half", "tiny"}
    tiny_x = t[(t.column == "tiny") & (t.group == "x")]
    assert tiny_x["estimate"].isna().all() and (tiny_x["n"] == 5).all()
    first = t[(t.column == "half") & (t.group == "first") & (t.metric == "accuracy")]
    assert first["n"].item() == y.size // 2
    curves = pd.DataFrame({
        "strategy": ["random"] * 4 + ["entropy"] * 4 + ["full"] * 2,
        "seed": [0, 0, 1, 1] * 2 + [0, 1],
        "round": [0, 1, 0, 1] * 2 + [0, 0],
        "n_labeled": [50, 100, 50, 100] * 2 + [1000, 1000],
        "fraction_labeled": [0.05, 0.1, 0.05, 0.1] * 2 + [1.0, 1.0],
        "metric": ["auc"] * 10,
        "value": [0.80, 0.90, 0.82, 0.92, 0.88, 0.96, 0.90, 0.98, 0.99, 0.97],
    })
    s = stats.learning_curve_summary(curves)
    r100 = s[(s.strategy == "random") & (s.n_labeled == 100)]
    assert r100["mean"].item() == pytest.approx(0.91) and r100["n_seeds"].item() == 2
    full = s[s.strategy == "full"]
    assert full["mean"].item() == pytest.approx(0.98) and full["min"].item() == 0.97 and full["max"].item() == 0.99


def test_format_ci():
    assert stats.format_ci(0.9, 0.8, 0.95) == "0.900 (0.800–0.950)"
    assert stats.format_ci(float("nan"), 0, 1) == "undefined"
