"""Which training recipe a round should use: random label subsets of a MedMNIST pool, one network per recipe.

Issue 12 (session 7). The active-learning curves mix three things (which cases, how the network is trained,
what the unlabelled pool adds); this script holds the cases fixed (a seeded random subset of the pool per label
count and seed) and varies only the training recipe, so it says what the round's training is worth on its own.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_recipe.py bloodmnist.npz OUT \
        --labels 240 1200 --seeds 0 1 2 --recipes old aug aug+cos pre+aug+cos fixmatch+pre+aug+cos auto+pre+aug+cos

Recipes (every one: medwb's default classifier, AdamW, class-weighted cross-entropy, best epoch on validation):
  old               the round's training before session 7: +-2 px shift, constant learning rate, an epoch = one pass
  aug               every flip and 90-degree turn (``augment="dihedral"``), constant learning rate
  aug+cos           ``dihedral`` + cosine learning-rate decay (the default now for orientation-free images)
  pre+aug+cos       the same from the SimCLR trunk pretrained on the whole pool (cached in OUT/cache)
  fixmatch+pre+aug+cos  FixMatch on the labelled subset + the rest of the pool, from the pretrained trunk
  auto+pre+aug+cos  medwb's round (``fit_round(semi=True)``): pre+aug+cos and fixmatch+pre+aug+cos both
                    trained, the one with the better validation score kept (the loop's default now)
  old3d             AdrenalMNIST3D's schedule before session 8 (15 epochs of >= 8 batches, best by validation loss)
  cos, pre+cos, fixmatch+pre+cos, auto+pre+cos
                    the same with the augmentation the dataset's modality gets by default (``default_augment``:
                    shift for PneumoniaMNIST's X-rays, dihedral for BloodMNIST's microscopy): the loop's recipe
``--first-batch cold_start`` draws the labelled subset as the loop's first round does (TypiClust in the SimCLR
embedding of the pool, ``random_state = seed * 1000 + 1``; ``cold_start_pixels``: on a PCA of the pixels, the
loop's round 1 without pretraining) instead of at random: the cold start's own worth, the
question of "Making Your First Choice" (arXiv 2210.02442), with the training recipe held fixed.
``--first-batch hard_to_contrast``: the same clusters, but each cluster's hardest-to-contrast case instead of its
most typical (``medwb.models.pretrain.contrast_confidence`` of the pool: that paper's pick).
``warm+pre+cos``: FixMatch started from the trained ``pre+cos`` model (its row is written too) instead of from the
trunk: does the pool add anything once supervised training has converged? ``--pretrain-steps N``: a longer (or
shorter) SimCLR run of the trunk than ``PretrainConfig``'s default, cached under its own key.
``self+pre+cos`` (session 25): offline self-training, ``medwb.al.fit.fit_self_trained`` (the loop's ``self_train``)
with ``--self-target-error`` (the auto-label rule's bound; 0: every pool case), ``--self-label-share`` (expert
labels repeated to this share of the student's cases), ``--self-epochs`` and ``--self-rounds`` (student -> teacher).
``--semi-schedule JSON --tag /NAME`` trains FixMatch with overrides (the loop's ``semi_schedule``) and names the
rows RECIPE/NAME, so a cheaper FixMatch can be compared with the default on the same label sets.
Each run appends a row to OUT/recipes.csv (resumable: rows already there are skipped); the table printed at
the end is the mean ± SD over seeds of the test accuracy and AUC, and the seconds of training at 1 thread.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from results_csv import append_result, has_result, read_results

from medwb.al.acquire import pixel_features, select
from medwb.al.autolabel import Prelabels, fit_temperature, prelabel
from medwb.al.fit import (
    check_semi_schedule,
    fit_fixmatch,
    fit_round,
    fit_self_trained,
    pseudo_label_pool,
    validation_score,
)
from medwb.al.representation import (
    pretrain_build_args,
    pretrained_embeddings,
    pretrained_representation,
)
from medwb.data import open_dataset
from medwb.models.networks import build_for_dataset
from medwb.models.pretrain import PretrainConfig, contrast_confidence
from medwb.models.train import default_train_config, predict_proba

RECIPES = {
    "old": dict(augment="shift", lr_schedule="constant", min_batches_per_epoch=0),
    "aug": dict(augment="dihedral", lr_schedule="constant"),
    "aug+cos": dict(augment="dihedral", lr_schedule="cosine"),
    "pre+aug+cos": dict(augment="dihedral", lr_schedule="cosine", pretrained=True),
    "fixmatch+pre+aug+cos": dict(augment="dihedral", lr_schedule="cosine", pretrained=True, semi="only"),
    "auto+pre+aug+cos": dict(augment="dihedral", lr_schedule="cosine", pretrained=True, semi=True),
    # FixMatch started from the trained supervised model (pre+cos) instead of from the trunk; its pre+cos row is
    # written from the same training
    "warm+pre+cos": dict(lr_schedule="cosine", pretrained=True, semi="warm"),
    # offline self-training: the trained pre+cos model (its row is written too) pseudo-labels the rest of the pool
    # with the auto-label rule (temperature and threshold on validation, --self-target-error), and a fresh student
    # from the pretrained trunk trains on the labels + the accepted pseudo-labels (--self-epochs epochs)
    "self+pre+cos": dict(lr_schedule="cosine", pretrained=True, semi="self"),
    # the same with the augmentation the dataset's modality gets by default (shift for X-ray, dihedral for
    # microscopy): what medwb's loop does on that dataset
    "cos": dict(lr_schedule="cosine"),
    "pre+cos": dict(lr_schedule="cosine", pretrained=True),
    "mixup+pre+cos": dict(lr_schedule="cosine", pretrained=True, mixup=0.2),
    "mixup1+pre+cos": dict(lr_schedule="cosine", pretrained=True, mixup=1.0),
    "fixmatch+pre+cos": dict(lr_schedule="cosine", pretrained=True, semi="only"),
    "auto+pre+cos": dict(lr_schedule="cosine", pretrained=True, semi=True),
    # AdrenalMNIST3D's committed schedule (run.sh adrenal, before session 8): at most 15 epochs of at least 8
    # batches, best epoch by validation loss, constant learning rate
    "old3d": dict(augment="shift", lr_schedule="constant", epochs=15, min_batches_per_epoch=8, patience=6,
                  select_on="loss"),
}


def teacher_pseudo_labels(teacher, X_rest: np.ndarray, val: tuple[np.ndarray, np.ndarray], target_error: float,
                          seed: int, confidence_level: float = 0.95) -> Prelabels:
    """The teacher's pseudo-labels of the unlabelled rest: medwb's auto-label rule (:func:`pseudo_label_pool`) with
    ``target_error`` (its bound at ``confidence_level``), or with 0 every case however unsure (calibrated,
    accepted at any confidence)."""
    if target_error > 0:
        return pseudo_label_pool(teacher, X_rest, val, target_error=target_error, seed=seed,
                                 confidence_level=confidence_level)
    t = fit_temperature(predict_proba(teacher, val[0]), val[1], seed=seed)
    return prelabel(predict_proba(teacher, X_rest), t, -np.inf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--labels", type=int, nargs="+", default=[240, 1200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per model (default: the loop's schedule: 40, raised by min_passes where it applies; "
                         "given: exactly these unless --min-passes too)")
    ap.add_argument("--min-passes", type=int, default=None,
                    help="TrainConfig.min_passes (default: the task's; 0: exactly --epochs, as before session 8)")
    ap.add_argument("--patience", type=int, default=None,
                    help="early-stopping patience (default: TrainConfig's; = --epochs: the whole cosine schedule)")
    ap.add_argument("--semi-schedule", default=None,
                    help="FixMatch overrides as JSON (SemiConfig fields, e.g. '{\"mu\": 2}'), as the loop's "
                         "semi_schedule; the rows' recipe names get --tag")
    ap.add_argument("--first-batch", choices=["random", "cold_start", "cold_start_pixels", "hard_to_contrast"],
                    default="random",
                    help="how the labelled subset is drawn: at random (default), by the loop's cold start in "
                         "the pretrained embedding (cold_start; hard_to_contrast: its clusters' hardest-to-contrast "
                         "cases) or on a pixel PCA (cold_start_pixels); name the "
                         "rows with --tag")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="SimCLR optimiser steps of the trunk (default: PretrainConfig's); cached per config")
    ap.add_argument("--self-target-error", type=float, default=0.02,  # session 25's first runs; medwb's default 0.05
                    help="self+pre+cos: the pseudo-labels' error bound on validation (auto-label rule); 0: every "
                         "case of the pool, however unsure")
    ap.add_argument("--self-confidence-level", type=float, default=0.95,
                    help="self+pre+cos: the confidence level of that bound (0.95: the auto-label rule's; 0.5: the "
                         "error's median estimate, for validation splits too small to certify 5%%)")
    ap.add_argument("--self-epochs", type=int, default=12,  # the same
                    help="self+pre+cos: the student's epochs over labels + pseudo-labels (cosine, run to the end)")
    ap.add_argument("--self-rounds", type=int, default=1,
                    help="self+pre+cos: teacher -> student iterations (each student teaches the next; the rows of "
                         "the earlier ones are named RECIPE@k)")
    ap.add_argument("--self-label-share", type=float, default=0.0,
                    help="self+pre+cos: repeat the expert labels until they are this share of the student's "
                         "cases (0: once each)")
    ap.add_argument("--tag", default="", help="appended to the recipe names of the rows (e.g. /mu2)")
    ap.add_argument("--cache", help="folder whose cache/ holds (or gets) the pretrained trunk (default: OUT); "
                    "a medwb simulate --out of the same pool reuses its pretraining")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(a.data, progress=False)
    # checked before any training (a misspelt field fails now, not after the pretraining)
    schedule = check_semi_schedule(default_train_config(ds.task, modality=ds.modality, spatial_dims=ds.ndim),
                                   json.loads(a.semi_schedule or "{}"))
    Xp, yp, _ = ds.arrays("train")
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    csv = out / "recipes.csv"
    done = read_results(csv)
    pre = None
    in_embedding = a.first_batch in ("cold_start", "hard_to_contrast")
    if any(RECIPES[r].get("pretrained") for r in a.recipes) or in_embedding:
        args = pretrain_build_args(lambda s: build_for_dataset(ds, seed=s), None)
        pconf = None if a.pretrain_steps is None else PretrainConfig(steps=a.pretrain_steps)
        pre = pretrained_representation(Path(a.cache or out), Xp, build_args=args, config=pconf, progress=False)
    embeddings: dict[int, np.ndarray] = {}  # the cold start's features per seed: the same for every label count
    confidence = None  # hard_to_contrast: the pool's contrast confidence (one per pool, not per seed)

    def first_batch_features(seed: int) -> np.ndarray:
        if seed not in embeddings:
            embeddings[seed] = (pretrained_embeddings(lambda s: build_for_dataset(ds, seed=s), seed, pre, Xp)
                                if in_embedding else
                                pixel_features(Xp, random_state=seed * 1000 + 1))
        return embeddings[seed]

    for n in a.labels:
        for seed in a.seeds:
            if n >= len(Xp):
                lab = np.arange(len(Xp))
            elif a.first_batch != "random":  # the loop's round 1: its seed, round number 1
                if a.first_batch == "hard_to_contrast" and confidence is None:
                    confidence = contrast_confidence(pre, Xp)
                lab = np.sort(select("cold_start", n, embeddings=first_batch_features(seed),
                                     random_state=seed * 1000 + 1, contrast_confidence=confidence)[0])
            else:
                lab = np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False))
            rest = np.setdiff1d(np.arange(len(Xp)), lab)

            def result_row(name: str, m: dict, seconds: float) -> dict:
                return {"recipe": name, "labels": n, "seed": seed, "seconds": seconds,
                        "first_batch": a.first_batch, "classes_in_batch": int(len(np.unique(yp[lab]))),
                        "best_epoch": m.get("best_epoch"), "test_auc": m["test_auc"],
                        "test_accuracy": m["test_accuracy"], "test_balanced_accuracy": m["test_balanced_accuracy"],
                        "fixmatch_kept": m.get("semi"), "val_score_supervised": m.get("val_score_supervised"),
                        "val_score_semi": m.get("val_score_semi"),
                        **{k: m[k] for k in ("pseudo_coverage", "pseudo_accuracy", "pseudo_threshold") if k in m}}
            for recipe in a.recipes:
                name = recipe + a.tag
                if has_result(done, name, n, seed):
                    continue
                r = dict(RECIPES[recipe])
                use_pre, semi = r.pop("pretrained", False), r.pop("semi", False)
                config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim,
                                              **{"epochs": a.epochs, "patience": a.patience,
                                                 "min_passes": a.min_passes, **r})
                t0 = time.perf_counter()
                if semi in ("warm", "self"):  # both start from the trained supervised model; its row too
                    sup, m_sup = fit_round(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], (Xv, yv),
                                           task=ds.task, config=config, pretrained=pre, test=(Xt, yt),
                                           progress=False)
                    if not has_result(done, "pre+cos" + a.tag, n, seed):
                        done = append_result(csv, result_row("pre+cos" + a.tag, m_sup, time.perf_counter() - t0))
                if semi == "warm":
                    _, m = fit_fixmatch(sup, Xp[lab], yp[lab], Xp[rest], (Xv, yv), config=config,
                                        test=(Xt, yt), progress=False, semi_schedule=schedule)
                    m = {**m, "val_score_supervised": validation_score(m_sup), "val_score_semi": validation_score(m)}
                elif semi == "self":
                    teacher, m_teacher = sup, m_sup
                    for it in range(1, a.self_rounds + 1):  # each student teaches the next
                        pseudo = teacher_pseudo_labels(teacher, Xp[rest], (Xv, yv), a.self_target_error, seed,
                                                       a.self_confidence_level)
                        ok = pseudo.labels[pseudo.auto_accept] == yp[rest][pseudo.auto_accept]
                        student, m = fit_self_trained(build_for_dataset(ds, seed=seed), teacher, Xp[lab], yp[lab],
                                                      Xp[rest], (Xv, yv), config=config, pretrained=pre,
                                                      test=(Xt, yt), progress=False, pseudo=pseudo,
                                                      label_share=a.self_label_share, epochs=a.self_epochs)
                        m = {**m, "pseudo_accuracy": float(ok.mean()) if len(ok) else float("nan"),
                             "val_score_supervised": validation_score(m_teacher), "val_score_semi": validation_score(m)}
                        print(json.dumps({"iteration": it, "test_accuracy": m["test_accuracy"],
                                          **{k: m[k] for k in ("pseudo_coverage", "pseudo_accuracy")}}), flush=True)
                        if it < a.self_rounds and not has_result(done, f"{name}@{it}", n, seed):
                            done = append_result(csv, result_row(f"{name}@{it}", m, time.perf_counter() - t0))
                        teacher, m_teacher = student, m
                elif semi == "only":
                    _, m = fit_fixmatch(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], Xp[rest], (Xv, yv),
                                        config=config, pretrained=pre, test=(Xt, yt), progress=False,
                                        semi_schedule=schedule)
                else:
                    _, m = fit_round(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], (Xv, yv), task=ds.task,
                                     config=config, pretrained=pre if use_pre else None, semi=bool(semi),
                                     X_unlabelled=Xp[rest] if semi else None, test=(Xt, yt), progress=False,
                                     semi_schedule=schedule)
                row = result_row(name, m, time.perf_counter() - t0)
                print(json.dumps(row), flush=True)
                done = append_result(csv, row)
    g = done.groupby(["labels", "recipe"], sort=False)
    table = g.agg(seeds=("seed", "nunique"), auc=("test_auc", "mean"), auc_sd=("test_auc", "std"),
                  accuracy=("test_accuracy", "mean"), accuracy_sd=("test_accuracy", "std"),
                  seconds=("seconds", "mean")).reset_index().sort_values(["labels", "accuracy"])
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    (out / "table.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
