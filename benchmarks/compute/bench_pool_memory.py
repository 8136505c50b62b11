"""Peak memory of scoring a pool as it grows from 10k to 100k cases (issue 15: RSS <= 2 GB and flat).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_pool_memory.py [--sizes 10000 30000 100000]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_pool_memory.py --volumes ADRENALMNIST3D_64_NPZ \
        [--sizes 5000 10000 20000] [--out pool_memory_3d.md]

Each pool is PneumoniaMNIST's train images tiled with seeded flips, shifts and brightness
(``bench_score.build_pool``), written as a real npz on disk: uncompressed (``np.savez``; medwb reads its rows on
demand, :mod:`medwb.data.npz_rows`) and, for the largest size, also compressed (``savez_compressed``: the member
is decompressed whole, the reference). One child process per row scores the whole pool in process (1 thread,
T = 20 MC-dropout passes + embeddings, shards of 1024, the tiny classifier) and reports its VmHWM before and
after ``score_pool``. The results table (one row per case: class, probabilities, uncertainty, 64-d embedding)
is part of what grows with N: its size is printed beside the peak.

With ``--volumes`` the pools are AdrenalMNIST3D_64's train volumes (64³, uint8) tiled with seeded flips and
brightness (``bench_stream_pretrain.build_pool``), scored by the narrow 3D classifier at the loop's 32³ input
size (each volume resized as it is read), shards of 256 volumes; only the uncompressed layout is measured
(a compressed member of 5 GB would be decompressed whole, which is what the row reading avoids).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_score import build_pool, measured_child, open_measured, parse_or_serve_child, peak_rss_mb  # noqa: E402
from bench_stream_pretrain import SIZE as SIZE_3D, build_pool as build_volume_pool  # noqa: E402


def child(model: str, pool: str) -> dict:
    import torch

    from medwb.compute import score_pool

    ds, before = open_measured(pool)
    three_d = torch.load(model, map_location="cpu", weights_only=False)["meta"]["build_args"]["spatial_dims"] == 3
    t = time.perf_counter()
    df = score_pool(model, ds, shard_size=256 if three_d else 1024, mc_samples=20, seed=0, progress=False)
    seconds = time.perf_counter() - t
    table_mb = (df.memory_usage(deep=True).sum() + sum(v.nbytes for v in df["embedding"])
                + sum(v.nbytes for v in df["probabilities"])) / 2**20
    return {"n": len(df), "seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
            "table_mb": float(table_mb)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--volumes", help="adrenalmnist3d_64.npz (MedMNIST v2): score tiled 3D volumes instead")
    ap.add_argument("--out", default=None)
    if (a := parse_or_serve_child(ap, child)) is None:
        return
    a.sizes = a.sizes or ([5_000, 10_000, 20_000] if a.volumes else [10_000, 30_000, 100_000])
    a.out = a.out or str(HERE / ("pool_memory_3d.md" if a.volumes else "pool_memory.md"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="medwb-bench-memory-") as tmp:
        folder = Path(tmp)
        os.environ["MEDWB_CACHE"] = str(folder / "cache")
        from medwb.data import open_dataset
        from medwb.models import build_classifier, save_checkpoint

        dims, meta = (3, {"size": list(SIZE_3D)}) if a.volumes else (2, None)
        model = save_checkpoint(build_classifier(dims, 1, 2, seed=0, channels=(8, 16, 32, 64)), folder / "m.pt",
                                meta=meta)
        runs = [(n, "uncompressed") for n in a.sizes] + ([] if a.volumes else [(max(a.sizes), "compressed")])
        for n, layout in runs:
            pool = build_volume_pool(Path(a.volumes), n, folder) if a.volumes else build_pool(n, folder)
            if layout == "compressed":
                with np.load(pool) as z:
                    packed = folder / f"packed_{n}.npz"
                    np.savez_compressed(packed, **{k: z[k] for k in z.files})
                pool.unlink()
                pool = packed
            open_dataset(pool, progress=False).cohort  # noqa: B018 - statistics once, outside the measured child
            rows.append({"layout": layout, "file_mb": pool.stat().st_size / 2**20,
                         **measured_child(__file__, str(model), str(pool), what=f"{n} {layout}")})
            print(rows[-1], flush=True)
            pool.unlink()
    what = "3D volumes" if a.volumes else "cases"
    lines = [f"# Scoring memory from {min(a.sizes)} to {max(a.sizes)} {what} (medwb.compute.score_pool in process, "
             "1 thread)", "",
             "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_pool_memory.py "
             + ("--volumes adrenalmnist3d_64.npz " if a.volumes else "") + "--sizes " + " ".join(map(str, a.sizes))
             + "`", "", (__doc__ or "").split("\n\n")[3 if a.volumes else 2].replace("\n", " "), "",
             "| cases | npz members | file MB | score s | cases/s | VmHWM before scoring MB | peak VmHWM MB | "
             "results table MB |", "|" + "---|" * 8]
    lines += [f"| {r['n']} | {r['layout']} | {r['file_mb']:.0f} | {r['seconds']:.1f} | {r['n'] / r['seconds']:.0f} | "
              f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['table_mb']:.0f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
