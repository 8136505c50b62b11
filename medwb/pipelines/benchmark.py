"""``medwb bench uncertainty DATA``: what T-pass MC-dropout uncertainty costs, against one plain pass and baal.

All methods run on the same network (the medwb default for the dataset, seeded) and the same pool, in the
same process, interleaved, each repeated and summarised by its median, so machine load hits them alike.
Timings do not depend on the weight values, so the network is not trained (one epoch would only add time).
baal (``MCDropoutModule`` + its in-memory replication of the batch, as ``ModelWrapper.predict_on_batch``
does) is a benchmark-only dependency.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medwb.atomic import ensure_output_dir
from medwb.errors import DataError


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _baal_runner(model: torch.nn.Module, X: np.ndarray, passes: int, batch_size: int) -> Callable[[], np.ndarray]:
    from baal.bayesian.dropout import MCDropoutModule
    from baal.utils.array_utils import stack_in_memory

    wrapped = MCDropoutModule(copy.deepcopy(model))
    wrapped.eval()  # baal's dropout layers ignore eval(); BatchNorm uses running stats
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    @torch.no_grad()
    def run() -> np.ndarray:
        outs = []
        for i in range(0, len(Xt), batch_size):
            xb = Xt[i:i + batch_size]
            logits = wrapped(stack_in_memory(xb, passes))  # (T*B, K, ...) like baal's predict_on_batch
            outs.append(torch.softmax(logits, 1).view(passes, len(xb), *logits.shape[1:]).numpy())
        return np.concatenate(outs, axis=1)

    return run


def bench_uncertainty(data: str | Path, *, passes: int = 20, max_pool: int | None = None,
                      out: str | Path | None = None, repeats: int = 7, slow_repeats: int = 3,
                      seed: int = 0) -> pd.DataFrame:
    """Time plain / medwb fast MC / medwb full MC / baal MC over the training pool of ``data``; print a
    table whose last two lines are ``medwb_over_plain=<ratio>`` and ``baal_over_plain=<ratio>``."""
    from medwb.data import open_dataset
    from medwb.models import build_classifier, build_segmenter, predict_proba
    from medwb.models.uncertainty import default_batch, mc_dropout_proba

    if out is not None:  # the table is written at the end: find an unwritable folder before the timing runs
        ensure_output_dir(Path(out) if Path(out).suffix != ".csv" else Path(out).parent)
    ds = open_dataset(data, progress=False)
    size = None
    if ds.task == "segmentation":  # UNet needs sizes divisible by 8: a fixed CPU-sized grid
        size = (64, 64) if ds.ndim == 2 else (32, 32, 32)
    X, _, _ = ds.arrays("train", size=size, max_cases=max_pool, seed=seed)
    if len(X) == 0:
        raise DataError(data, "the training split is empty", "benchmark a dataset with training cases")
    k = max(2, len(ds.classes))
    build = build_classifier if ds.task == "classification" else build_segmenter
    model = build(ds.ndim, X.shape[1], k, seed=seed).eval()
    per_sample = int(np.prod(X.shape[1:]))
    full_bs = default_batch(passes, per_sample, fast=False)

    def plan(Xs: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
        m: dict[str, Callable[[], np.ndarray]] = {
            "plain forward (1 pass)": lambda: predict_proba(model, Xs),
            f"medwb MC fast (T={passes})": lambda: mc_dropout_proba(model, Xs, passes=passes, fast=True, seed=seed),
            f"medwb MC full (T={passes})": lambda: mc_dropout_proba(model, Xs, passes=passes, fast=False,
                                                                     seed=seed),
        }
        try:
            m[f"baal MCDropoutModule (T={passes})"] = _baal_runner(model, Xs, passes, full_bs)
        except ImportError:
            pass
        return m

    methods = plan(X)
    baal_note = "" if any(n.startswith("baal") for n in methods) else \
        "baal is not installed (pip install baal==2.1.0): its row is missing"
    for fn in plan(X[:min(len(X), 64)]).values():  # warm-up: allocator, lazy init, thread pools
        fn()
    slow_repeats = max(1, min(repeats, slow_repeats))
    times: dict[str, list[float]] = {m: [] for m in methods}
    spread: dict[str, float] = {}
    for r in range(repeats):
        for name, fn in methods.items():  # interleaved: load changes hit every method alike
            if r >= slow_repeats and ("full" in name or "baal" in name):
                continue  # the T-times-slower methods: fewer repeats, their median is still robust
            dt, out_arr = _timed(fn)
            times[name].append(dt)
            if name not in spread:  # how much the T samples differ (0 = no dropout was active)
                spread[name] = float(out_arr.std(0).mean()) if "plain" not in name else 0.0

    plain = statistics.median(times["plain forward (1 pass)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"method": name, "runs": len(ts), "median_s": round(med, 4), "min_s": round(min(ts), 4),
                     "max_s": round(max(ts), 4), "over_plain": round(med / plain, 3),
                     "mean_sample_std": round(spread[name], 5)})
    table = pd.DataFrame(rows)
    header = (f"dataset={Path(data).name} task={ds.task} ndim={ds.ndim} pool={len(X)} input={tuple(X.shape[1:])} "
              f"passes={passes} repeats={repeats} (full/baal: {slow_repeats}) torch_threads={torch.get_num_threads()} "
              f"params={sum(p.numel() for p in model.parameters())}")
    print(header)
    print(table.to_string(index=False))
    if baal_note:
        print(baal_note)
    if out is not None:
        out = Path(out)
        path = out if out.suffix == ".csv" else out / "results.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.assign(dataset=Path(data).name, pool=len(X), passes=passes, repeats=repeats,
                     torch_threads=torch.get_num_threads()).to_csv(path, index=False)
    fast = table.loc[table.method.str.startswith("medwb MC fast"), "over_plain"].iloc[0]
    baal_rows = table.loc[table.method.str.startswith("baal"), "over_plain"]
    print(f"medwb_over_plain={fast:.3f}")
    print(f"baal_over_plain={baal_rows.iloc[0]:.3f}" if len(baal_rows) else "baal_over_plain=nan")
    return table
