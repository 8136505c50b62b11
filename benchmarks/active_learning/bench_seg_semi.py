"""Does the unlabelled pool help a segmentation round? Supervised vs mean-teacher training on fixed label sets.

Issue 12 ("consistency or confident pseudo-labels for segmentation"; the hippocampus 10% target). The label set
is held fixed (a seeded random subset of the pool per seed, as a random first batch) and only the round's
training varies:

  supervised   medwb.models.train.train with the loop's segmentation schedule (what rounds trained until now)
  mean-teacher medwb.models.semi_seg.train_semi_segmentation from the same init, the rest of the pool unlabelled
  auto         medwb.al.fit.fit_round(semi=True): both trained, the better validation Dice kept (the loop's rule)
  self-train   medwb.al.fit.fit_self_trained: the supervised model (the teacher, cached in OUT per seed) gives
               every pool volume its argmax mask; a copy of the teacher (--self-start fresh: a fresh network from
               the same init) learns the expert masks, repeated to --self-label-share of its volumes, plus the
               pseudo-masks, for --self-epochs epochs (default: the loop's)

``--pretrained FILE`` (a ``save_pretrained`` result, e.g. from benchmarks/pretrain/bench_pretrain_seg2d.py): every
recipe starts from that SimCLR trunk, as the loop's rounds do (``fit_round(pretrained=...)``); name its rows with
``--tag``. 2D sets: ``--size 128x128`` (``default_size``'s cap).

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py HIPPOCAMPUS_DIR OUT \
        --size 32x48x32 --labels 17 --seeds 0 1 2

Splits: the simulation's (``carve_splits`` of the cohort: hippocampus pool 169 / val 39 / test 52), so the test
Dice is comparable with ``hippocampus_medwb/``. Each run appends a row to OUT/seg_semi.csv (resumable); the
table printed at the end (and OUT/table.txt) is mean ± SD over seeds of the test Dice and the training seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from results_csv import append_result, has_result, read_results

import torch

from medwb.al.fit import SELF_TRAIN_LABEL_SHARE, fit_round, fit_self_trained
from medwb.al.representation import with_pretrained
from medwb.data import Dataset, open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models.networks import build_for_dataset
from medwb.models.semi_seg import semi_seg_config_from, train_semi_segmentation
from medwb.models.train import TrainConfig, default_train_config, evaluate

RECIPES = ("supervised", "mean-teacher", "auto", "self-train")
Arrays = tuple[np.ndarray, np.ndarray]


def fixed_set_inputs(data: str, size: tuple[int, ...]) -> tuple[Dataset, Arrays, Arrays, Arrays]:
    """(dataset, pool, val, test) arrays at ``size`` on the simulation's splits (``carve_splits``), so test Dice
    here compares with ``hippocampus_medwb/``; shared with ``hippocampus_semi/probes/``."""
    ds = open_dataset(data, progress=False)
    inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), size)
    return ds, inputs["train"][:2], inputs["val"][:2], inputs["test"][:2]


def run_inputs(out: str, data: str, size: str) -> tuple[Path, Dataset, Arrays, Arrays, Arrays]:
    """OUT (created) and :func:`fixed_set_inputs` at a ``"AxB[xC]"`` size: how each fixed-set script starts."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return (path, *fixed_set_inputs(data, tuple(int(v) for v in size.split("x"))))


def random_label_set(seed: int, n: int, n_pool: int) -> np.ndarray:
    """Sorted pool indices of the seed's fixed label set: a seeded random ``n`` of ``n_pool`` (all when n >=
    n_pool), as a random first batch."""
    if n >= n_pool:
        return np.arange(n_pool)
    return np.sort(np.random.default_rng(seed).choice(n_pool, n, replace=False))


def cached_model(path: Path, ds: Dataset, seed: int,
                 train: Callable[[torch.nn.Module], tuple[torch.nn.Module, dict[str, float]]]
                 ) -> tuple[torch.nn.Module, dict[str, float]]:
    """``train`` (given the seed's fresh network) run once per ``path`` and kept in OUT with its metrics, so the
    variants that start from or rank with that model share it; later calls load it."""
    model = build_for_dataset(ds, seed=seed)
    if path.exists():
        saved = torch.load(path, weights_only=False)
        model.load_state_dict(saved["state"])
        return model, saved["metrics"]
    model, m = train(model)
    torch.save({"state": model.state_dict(), "metrics": m}, path)
    return model, m


def cached_teacher(path: Path, ds: Dataset, seed: int, X: np.ndarray, y: np.ndarray, val: Arrays,
                   config: TrainConfig, test: Arrays, pretrained: Path | None = None
                   ) -> tuple[torch.nn.Module, dict[str, float]]:
    """The supervised round model of this label set (the self-trained student's teacher), trained once per
    (labels, seed) and kept in OUT, so student variants share it."""
    return cached_model(path, ds, seed, lambda model: fit_round(model, X, y, val, task=ds.task, config=config,
                                                                test=test, progress=False, pretrained=pretrained))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--size", default="32x48x32", help="training grid, e.g. 32x48x32")
    ap.add_argument("--labels", type=int, nargs="+", default=[17])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=["supervised", "mean-teacher"], choices=RECIPES)
    ap.add_argument("--semi-schedule", default=None, help="SemiSegConfig overrides as JSON; name rows with --tag")
    ap.add_argument("--train-config", default=None,
                    help="TrainConfig overrides as JSON for every recipe (e.g. {\"augment\": \"intensity\"})")
    ap.add_argument("--self-label-share", type=float, default=SELF_TRAIN_LABEL_SHARE)
    ap.add_argument("--self-epochs", type=int, default=None,
                    help="the student's epochs (default: fit_self_trained's for segmentation, "
                         "SELF_TRAIN_SEGMENTATION_EPOCHS)")
    ap.add_argument("--self-start", choices=("fresh", "teacher"), default="teacher",
                    help="the student's start: the trained teacher's weights (the loop's, for segmentation) or the "
                         "round's initial weights (fresh: session 26's student)")
    ap.add_argument("--pretrained", type=Path, default=None, help="start every recipe from this SimCLR trunk")
    ap.add_argument("--tag", default="", help="appended to the recipe names of the rows (e.g. /t0.8)")
    a = ap.parse_args()
    out, ds, (Xp, yp), val, test = run_inputs(a.out, a.data, a.size)
    overrides = json.loads(a.semi_schedule or "{}")
    train_overrides = json.loads(a.train_config or "{}")
    csv = out / "seg_semi.csv"
    done = read_results(csv)
    for n in a.labels:
        for seed in a.seeds:
            lab = random_label_set(seed, n, len(Xp))
            rest = np.setdiff1d(np.arange(len(Xp)), lab)
            for recipe in a.recipes:
                name = recipe + a.tag
                if has_result(done, name, n, seed):
                    continue
                config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim,
                                              **train_overrides)
                model = build_for_dataset(ds, seed=seed)
                t0 = time.perf_counter()
                extra: dict[str, float] = {}
                if recipe == "mean-teacher":
                    if a.pretrained is not None:
                        model = with_pretrained(model, a.pretrained)
                    res = train_semi_segmentation(model, Xp[lab], yp[lab], Xp[rest], *val,
                                                  config=semi_seg_config_from(config, **overrides), progress=False)
                    m = {"best_epoch": res.best_epoch, "val_dice": res.val_metric,
                         **{f"test_{k}": v for k, v in evaluate(res.model, *test).items()}}
                    extra = {"mask_rate_last": res.history[-1]["mask_rate"],
                             "pseudo_foreground_last": res.history[-1]["pseudo_foreground"]}
                elif recipe == "self-train":
                    teacher, m_t = cached_teacher(out / f"teacher_{n}_{seed}{a.tag.replace('/', '_')}.pt", ds, seed,
                                                  Xp[lab], yp[lab], val, config, test, a.pretrained)
                    start = None if a.self_start == "teacher" else model  # None: fit_self_trained copies the teacher
                    _, m = fit_self_trained(start, teacher, Xp[lab], yp[lab], Xp[rest], val, task=ds.task,
                                            config=config, test=test, progress=False,
                                            label_share=a.self_label_share, epochs=a.self_epochs,
                                            pretrained=a.pretrained)
                    extra = {"teacher_test_dice": m_t["test_dice"], "teacher_val_dice": m_t["val_dice"]}
                else:
                    _, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config,
                                     semi=recipe == "auto", X_unlabelled=Xp[rest], test=test, progress=False,
                                     semi_schedule=overrides or None, pretrained=a.pretrained)
                row = {"recipe": name, "labels": n, "seed": seed, "seconds": time.perf_counter() - t0,
                       "best_epoch": m.get("best_epoch"), "val_dice": m.get("val_dice"),
                       "test_dice": m["test_dice"], "semi_kept": m.get("semi"), **extra}
                print(json.dumps(row), flush=True)
                done = append_result(csv, row)
    table = (done.groupby(["labels", "recipe"], sort=False)
             .agg(seeds=("seed", "nunique"), test_dice=("test_dice", "mean"), test_dice_sd=("test_dice", "std"),
                  val_dice=("val_dice", "mean"), seconds=("seconds", "mean")).reset_index())
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    (out / "table.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
