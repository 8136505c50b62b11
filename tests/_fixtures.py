"""Small real-data builders shared by several test modules (imported as ``from _fixtures import ...``).

Plain functions, so that a test's worker subprocess can import them as well as a fixture can call them; the
session-scoped fixtures wrapping them live in ``tests/conftest.py``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.notebook_runner import external_urls

PNEUMONIA = Path("classification_2d") / "pneumoniamnist.npz"  # relative to data_samples/


def tiny_pneumonia_npz(src: Path, dst: Path, *, n_train: int, n_val: int, n_test: int) -> Path:
    """Real PneumoniaMNIST cases, a class-balanced prefix of each official split of ``src`` (the first
    ``n // 2`` normal and ``n - n // 2`` pneumonia cases, in their original order), written to ``dst``."""
    d = np.load(src)
    out = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = d[f"{split}_labels"].ravel()
        idx = np.sort(np.concatenate([np.flatnonzero(y == 0)[: n // 2], np.flatnonzero(y == 1)[: n - n // 2]]))
        out[f"{split}_images"], out[f"{split}_labels"] = d[f"{split}_images"][idx], d[f"{split}_labels"][idx]
    np.savez(dst, **out)
    return dst


def pneumonia_arrays(samples: Path, *, n_train: int = 800, n_val: int = 200, n_test: int) -> dict[str, np.ndarray]:
    """The first cases of each PneumoniaMNIST split as float32 (N, 1, 28, 28) images in [0, 1] and int64 labels:
    keys X, y (train), Xv, yv (val), Xt, yt (test)."""
    d = np.load(samples / PNEUMONIA)
    f = lambda k, n: d[k][:n, None].astype(np.float32) / 255.0  # noqa: E731
    lab = lambda k, n: d[k][:n, 0].astype(np.int64)  # noqa: E731
    return {"X": f("train_images", n_train), "y": lab("train_labels", n_train),
            "Xv": f("val_images", n_val), "yv": lab("val_labels", n_val),
            "Xt": f("test_images", n_test), "yt": lab("test_labels", n_test)}


def train_tiny_pneumonia_model(samples: Path, *, n_train: int = 800, n_val: int = 200, epochs: int = 4,
                               seed: int = 0, channels: tuple[int, ...] = (8, 16, 32, 64)):
    """The tiny PneumoniaMNIST classifier of the explain tests (2D, 1 channel, 2 classes), trained on the first
    ``n_train`` training / ``n_val`` validation cases. Asserts it learned something (val AUC > 0.8), else its
    attribution maps mean nothing. Returned in eval mode."""
    from medwb.models import TrainConfig, build_classifier, train

    a = pneumonia_arrays(samples, n_train=n_train, n_val=n_val, n_test=0)
    res = train(build_classifier(2, 1, 2, seed=seed, channels=channels), a["X"], a["y"], a["Xv"], a["yv"],
                task="classification", config=TrainConfig(epochs=epochs, seed=seed), progress=False)
    assert res.val_metric > 0.8  # a model that learned something, else its maps mean nothing
    return res.model


def pneumonia_test_labels(samples) -> np.ndarray:
    """The official PneumoniaMNIST test labels (624 real cases) from the bundled sample."""
    return np.load(samples / "classification_2d" / "pneumoniamnist.npz")["test_labels"].ravel().astype(int)


def noisy_scores(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A realistic but imperfect score: the truth plus Gaussian noise, squashed to a probability."""
    rng = np.random.default_rng(seed)
    p1 = 1 / (1 + np.exp(-(2.0 * (y - 0.5) * 2 + rng.normal(0, 1.5, y.size))))
    return np.stack([1 - p1, p1], axis=1)


def check_demo_outputs(out: Path, stdout: str) -> None:
    """What ``medwb demo --quick`` must leave in ``out``: every stage ok, an offline index whose links all
    resolve, the report built on the hybrid study and agreeing with the loop's own test AUC.

    Run by ``tests/pipelines/test_wheel_install.py`` on the demo of an installed wheel (the README's main job
    from an install; one demo run serves both checks, so the suite pays for it once)."""
    assert f"Index of every report: {out / 'index.html'}" in stdout
    timings = json.loads((out / "demo_timings.json").read_text())
    assert all(s["ok"] for s in timings["stages"].values()), timings
    index = (out / "index.html").read_text()
    assert external_urls(index) == [] and "<script" not in index
    links = re.findall(r'href="([^"]+)"', index)
    assert "pre-labelled correctly" in (out / "structure" / "structure.txt").read_text()
    for must in ("explore/", "simulation/curves.png", "structure/clusters.csv", "validation/validation_report.html",
                 "validation/validation_report.pdf", "overlays/gradcam.png"):
        assert any(must in link for link in links), must
    for link in links:
        assert (out / link).exists(), link  # every link resolves
    v = out / "validation"
    html = (v / "validation_report.html").read_text()
    assert external_urls(html) == []
    curves = pd.read_csv(out / "simulation" / "curves.csv")
    assert {"random-scratch", "hybrid", "full", "full-pretrained"} <= set(curves["strategy"])
    head = (out / "simulation" / "headline.txt").read_text()
    assert "hybrid" in head and "random-scratch" in head and "labels to 98% of all labels" in head
    assert "auto-labels, hybrid" in head
    assert "in the pool's own distribution" in head  # the demo's --max-pool leaves training cases out
    assert "Headline: medwb against random + scratch" in (out / "index.html").read_text()
    lc = pd.read_csv(v / "tables" / "learning_curves.csv")
    assert {"random-scratch", "hybrid", "full"} <= set(lc["strategy"])  # the report shows medwb against random + scratch
    held = pd.read_csv(v / "tables" / "learning_curves_in_distribution.csv")  # the pool's own distribution too
    assert {"random-scratch", "hybrid", "full"} <= set(held["strategy"])
    m = pd.read_csv(v / "tables" / "metrics.csv")
    auc = m[m["metric"] == "auc"]["estimate"].item()
    # the report evaluates the hybrid study's last model on the whole test split: the same AUC the loop recorded
    last = curves[(curves["strategy"] == "hybrid") & (curves["metric"] == "auc") & (curves["seed"] == 0)
                  ].sort_values("round").iloc[-1]  # the report describes the seed-0 study (pick_study)
    assert auc == pytest.approx(last["value"], abs=1e-4)
    assert (m["n"] == 624).all()
    checks = pd.read_csv(v / "tables" / "xai_checks.csv")
    assert {"randomization"} <= set(checks["check"])
    src = pd.read_csv(v / "tables" / "label_sources.csv")
    assert src["labels"].sum() > 0


def tiny_pneumonia_loop(samples: Path, folder: Path, *, n_train: int = 30, batch_size: int = 4,
                        strategy: str = "entropy", train_config=None):
    """(study, dataset, loop) on a tiny real PneumoniaMNIST pool in ``folder``: the plain baseline pipeline
    (no pretraining, no FixMatch), so a round trains in seconds; ``train_config``: the loop's (default: the
    product's schedule). The caller closes the study."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.store import Study

    path = tiny_pneumonia_npz(samples / PNEUMONIA, folder / "p.npz", n_train=n_train, n_val=10, n_test=10)
    ds = open_dataset(path, progress=False)
    study = Study.create(folder / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy=strategy, batch_size=batch_size, seed=0, progress=False,
                              pretrain=False, semi=False, train_config=train_config)
    return study, ds, loop
