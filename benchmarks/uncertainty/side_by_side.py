"""A round's two candidates one after the other at 2 threads, or side by side at 1 thread each (issue 12's round time).

    python benchmarks/uncertainty/side_by_side.py

Why: a round trains supervised and FixMatch candidates; if two single-thread processes did more work than one
two-thread process, training them side by side would shorten the round. Fixed work (6 epochs each, no early
stopping; 470 random PneumoniaMNIST labels, the rest of the pool unlabelled, from scratch), wall seconds. Session
14 on the 2-core machine, alone: one after the other at 2 threads 11.6 + 18.0 = 29.6 s; side by side 38.1 s and,
with the processes swapped, 33.8 s. A second thread speeds each candidate up 1.7-2.1x here, so side by side lost
(14-29% slower) and fit_round keeps training them one after the other.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medwb.models import TrainConfig, build_classifier, train
from medwb.models.semi import SemiConfig, train_semi

DATA = Path(__file__).resolve().parents[2] / "data_samples" / "classification_2d" / "pneumoniamnist.npz"
SUP = TrainConfig(epochs=6, min_epochs=6, patience=100, min_batches_per_epoch=32)
SEMI = SemiConfig(epochs=6, min_epochs=6, patience=100)


def arrays() -> tuple[np.ndarray, ...]:
    d = np.load(DATA)
    X = d["train_images"][:, None].astype(np.float32) / 255.0
    y = d["train_labels"][:, 0].astype(np.int64)
    lab = np.random.default_rng(0).choice(len(X), 470, replace=False)
    Xv = d["val_images"][:, None].astype(np.float32) / 255.0
    return X[lab], y[lab], np.delete(X, lab, 0), Xv, d["val_labels"][:, 0]


def supervised(threads: int) -> float:
    torch.set_num_threads(threads)
    Xl, yl, _, Xv, yv = arrays()
    t = time.perf_counter()
    train(build_classifier(2, 1, 2), Xl, yl, Xv, yv, config=SUP, progress=False)
    return time.perf_counter() - t


def fixmatch(threads: int) -> float:
    torch.set_num_threads(threads)
    Xl, yl, Xu, Xv, yv = arrays()
    t = time.perf_counter()
    train_semi(build_classifier(2, 1, 2), Xl, yl, Xu, Xv, yv, config=SEMI, progress=False)
    return time.perf_counter() - t


def main() -> None:
    a, b = supervised(2), fixmatch(2)
    print(f"one after the other, 2 threads: supervised {a:.1f} s, FixMatch {b:.1f} s, total {a + b:.1f} s", flush=True)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        pool.submit(int, 0).result()  # the side process is up (torch imported) before the clock starts
        for here, there in ((supervised, fixmatch), (fixmatch, supervised)):
            t = time.perf_counter()
            f = pool.submit(there, 1)
            mine = here(1)
            theirs = f.result()
            print(f"side by side, 1 thread each ({here.__name__} here): {here.__name__} {mine:.1f} s, "
                  f"{there.__name__} {theirs:.1f} s, wall {time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
