"""Peak memory of whole active-learning rounds on a streamed pool, 10k to 100k cases (issue 15).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_stream_round.py [--sizes 10000 100000]

Each pool is PneumoniaMNIST's train images tiled with seeded flips, shifts and brightness (``bench_score.build_pool``),
written as a real uncompressed npz with PneumoniaMNIST's validation and test splits. One child process per size runs medwb's default loop with
``ActiveLearningLoop(stream=True)`` (the pool is never held: pretraining, FixMatch and scoring read their batches
from the file) and reports its VmHWM after each step: SimCLR pretraining on the whole pool (``--pretrain-steps``
optimiser steps), round 1 (cold start in the pretrained embedding of every pool case, ``--batch`` labels from the
simulated oracle, training: supervised and FixMatch from the trunk), then round 2's proposal (the whole pool scored
with T = 20 MC passes + embeddings, shard by shard, and hybrid selection). Validation and test are PneumoniaMNIST's own
(524 and 624 images, held in memory).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_score import build_pool, measured_child, open_measured, parse_or_serve_child, peak_rss_mb  # noqa: E402


def build_split_pool(n: int, folder: Path) -> Path:
    """``bench_score.build_pool``'s N tiled training images as the pool, with PneumoniaMNIST's own validation and
    test splits beside them (so the pool is exactly N cases, none carved off)."""
    import numpy as np

    path = build_pool(n, folder)
    with np.load(path) as tiled, np.load(HERE.parents[1] / "data_samples" / "classification_2d"
                                         / "pneumoniamnist.npz") as real:
        parts = {**{k: tiled[k] for k in tiled.files},
                 **{k: real[k] for k in ("val_images", "val_labels", "test_images", "test_labels")}}
    np.savez(path, **parts)
    return path


def child(pool: str, settings: str) -> dict:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.models.pretrain import PretrainConfig
    from medwb.store import Study

    batch, steps = (int(v) for v in settings.split(","))
    ds, before = open_measured(pool)
    marks = {"imports + dataset": (0.0, before)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medwb-stream-round-") as tmp:
        study = Study.create(Path(tmp) / "study", dataset_path=pool, task=ds.task, classes=ds.classes, key=False)
        config = PretrainConfig(steps=steps)  # rounded up to whole epochs: one pass over a 100k pool is 782 steps
        loop = ActiveLearningLoop(study, ds, batch_size=batch, seed=0, stream=True, progress=False,
                                  pretrain_config=config)
        mark = lambda name: marks.__setitem__(name, (time.perf_counter() - t0, peak_rss_mb()))  # noqa: E731
        loop.representation()
        mark("pretraining")
        oracle = simulated_oracle(ds)
        proposed = loop.commit_auto(loop.propose())
        for row in proposed.itertuples(index=False):
            loop.save_label(str(row.case_id), oracle(str(row.case_id), None))
        mark("round 1: cold start + labels")
        loop.complete()
        mark("round 1: training")
        loop.propose()
        mark("round 2: score + select")
        n = loop.pool_size
        study.close()
    return {"n": n, "marks": marks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--out", default=str(HERE / "stream_round.md"))
    if (a := parse_or_serve_child(ap, child)) is None:
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="medwb-bench-stream-round-") as tmp:
        folder = Path(tmp)
        os.environ["MEDWB_CACHE"] = str(folder / "cache")
        from medwb.data import open_dataset

        for n in a.sizes:
            pool = build_split_pool(n, folder)
            open_dataset(pool, progress=False).cohort  # noqa: B018 - statistics once, outside the measured child
            rows.append(measured_child(__file__, str(pool), f"{a.batch},{a.pretrain_steps}", what=f"{n}"))
            print(rows[-1], flush=True)
            pool.unlink()
    steps = list(rows[0]["marks"])
    lines = ["# Whole rounds on a streamed pool: peak memory from 10k to 100k cases (1 thread)", "",
             "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_stream_round.py --sizes "
             + " ".join(map(str, a.sizes)) + f" --batch {a.batch}`", "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             "| pool cases | " + " | ".join(f"{s}: s / peak MB" for s in steps) + " |",
             "|" + "---|" * (len(steps) + 1)]
    for r in rows:
        lines.append(f"| {r['n']} | " + " | ".join(f"{r['marks'][s][0]:.0f} / {r['marks'][s][1]:.0f}" for s in steps)
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
