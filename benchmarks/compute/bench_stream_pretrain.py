"""Peak memory of pretraining a 3D pool held in memory against the same pool streamed (issue 15).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_stream_pretrain.py ADRENALMNIST3D_64_NPZ \
        [--sizes 1000 3000 6000]

Each pool is AdrenalMNIST3D_64's 1188 train volumes (64³, uint8) tiled with seeded flips and brightness, written
as a real uncompressed npz (``np.savez``: medwb reads its rows on demand). One child process per row runs one
epoch of SimCLR (``medwb.models.pretrain.pretrain``: fingerprint, training, BatchNorm recalibration) at the
loop's 32³ input size with the narrow 3D trunk (channels 8-16-32-64, batches of 64), 1 thread, either on
``Dataset.arrays`` (the whole pool at 32³ float32 in memory) or on a ``CaseImages`` (``--stream``: each batch
read and resized when needed), and reports its VmHWM before and after. The two modes end with the same weights
(checked here on every size, and bit for bit in tests/data/test_case_images.py).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_score import measured_child, open_measured, parse_or_serve_child, peak_rss_mb  # noqa: E402

SIZE = (32, 32, 32)


def build_pool(source: Path, n: int, folder: Path, seed: int = 0) -> Path:
    """N AdrenalMNIST3D_64-like volumes: the train volumes tiled with seeded flips and brightness."""
    with np.load(source) as z:
        src, lab = z["train_images"], z["train_labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    pick = np.arange(n) % len(src)
    vols = np.empty((n, *src.shape[1:]), np.uint8)
    for i0 in range(0, n, 500):
        part = src[pick[i0:i0 + 500]].astype(np.float32)
        flip = rng.random(len(part)) < 0.5
        part[flip] = part[flip, :, ::-1]
        part *= rng.uniform(0.9, 1.1, size=(len(part), 1, 1, 1)).astype(np.float32)
        vols[i0:i0 + 500] = np.clip(part, 0, 255).astype(np.uint8)
    path = folder / f"adrenal64_tiled_{n}.npz"
    np.savez(path, train_images=vols, train_labels=lab[pick].reshape(-1, 1))
    return path


def child(pool: str, mode: str) -> dict:
    from medwb.data.case_images import CaseImages
    from medwb.models import build_classifier
    from medwb.models.pretrain import PretrainConfig, pretrain

    ds, before = open_measured(pool)
    t = time.perf_counter()
    ids = ds.case_ids("train")
    X = CaseImages(ds, ids, SIZE) if mode == "streamed" else ds.arrays("train", size=SIZE)[0]
    ba = build_classifier(3, 1, 2, seed=0, channels=(8, 16, 32, 64)).build_args
    res = pretrain(ba, X, config=PretrainConfig(epochs=1, batch_size=64, seed=0), progress=False)
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in res.trunk_state.values())).hexdigest()[:16]
    return {"n": len(ids), "mode": mode, "seconds": time.perf_counter() - t, "rss_before_mb": before,
            "peak_rss_mb": peak_rss_mb(), "pool_at_input_mb": len(ids) * np.prod(SIZE) * 4 / 2**20,
            "weights": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help="adrenalmnist3d_64.npz (MedMNIST v2)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 6000])
    ap.add_argument("--out", default=str(HERE / "stream_pretrain.md"))
    if (a := parse_or_serve_child(ap, child)) is None:
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="medwb-bench-stream-") as tmp:
        folder = Path(tmp)
        os.environ["MEDWB_CACHE"] = str(folder / "cache")
        from medwb.data import open_dataset

        for n in a.sizes:
            pool = build_pool(Path(a.source), n, folder)
            open_dataset(pool, progress=False).cohort  # noqa: B018 - statistics once, outside the measured child
            for mode in ("in memory", "streamed"):
                rows.append({"file_mb": pool.stat().st_size / 2**20,
                             **measured_child(__file__, str(pool), mode, what=f"{n} {mode}")})
                print(rows[-1], flush=True)
            pool.unlink()
    same = all(len({r["weights"] for r in rows if r["n"] == n}) == 1 for n in a.sizes)
    lines = ["# Pretraining memory: a 3D pool in memory against the same pool streamed (1 thread)", "",
             "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compute/bench_stream_pretrain.py "
             "adrenalmnist3d_64.npz --sizes " + " ".join(map(str, a.sizes)) + "`", "",
             (__doc__ or "").split("\n\n")[2].replace("\n", " "), "",
             "| volumes | file MB | pool at 32³ float32 MB | mode | seconds | VmHWM before MB | peak VmHWM MB | "
             "peak - before MB | weights |", "|" + "---|" * 9]
    lines += [f"| {r['n']} | {r['file_mb']:.0f} | {r['pool_at_input_mb']:.0f} | {r['mode']} | {r['seconds']:.0f} | "
              f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['rss_before_mb']:.0f} | "
              f"{r['weights']} |" for r in rows]
    lines += ["", f"Same weights in both modes at every size: {'yes' if same else 'NO'}."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
