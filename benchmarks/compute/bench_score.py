"""Pool scoring in process vs on a LocalCluster of 1 and 2 single-thread Dask workers (medwb.compute, issue 15).

    .venv/bin/python benchmarks/compute/bench_score.py --n 20000

Builds a pool of N cases by tiling PneumoniaMNIST's train images with seeded augmentation (flips, shifts of up
to 2 px, brightness x0.9-1.1), written as a real npz under a temp dir, and a medwb checkpoint of the tiny
classifier (untrained: the time of a forward pass does not depend on the weights). Each mode runs in its own
child process, so each peak RSS is that process's alone: the client (which holds the results) and every worker.
Prints a table and writes it to benchmarks/compute/results.md (--out) with the command and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODES = ("in-process, 2 threads", "in-process, 1 thread", "1 worker", "2 workers")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM of its own address space (``ru_maxrss`` is not: Linux
    carries it over fork and exec, so a child would report its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_pool(n: int, folder: Path, seed: int = 0) -> Path:
    """N PneumoniaMNIST-like cases: the 4708 train images tiled with seeded flips, shifts and brightness."""
    z = np.load(ROOT / "data_samples" / "classification_2d" / "pneumoniamnist.npz")
    src, lab = z["train_images"], z["train_labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    pick = np.arange(n) % len(src)
    imgs = src[pick].astype(np.float32)
    flip = rng.random(n) < 0.5
    imgs[flip] = imgs[flip, :, ::-1]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for (dy, dx) in {tuple(s) for s in shifts.tolist()}:
        m = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
        imgs[m] = np.roll(imgs[m], (dy, dx), axis=(1, 2))
    imgs *= rng.uniform(0.9, 1.1, size=(n, 1, 1)).astype(np.float32)
    path = folder / f"pneumonia_tiled_{n}.npz"
    np.savez(path, train_images=np.clip(imgs, 0, 255).astype(np.uint8), train_labels=lab[pick].reshape(-1, 1))
    return path


def open_measured(pool: str):
    """In a measuring child process: one torch thread, imports paid, the pool opened with its statistics (cached
    by the parent); returns (dataset, VmHWM MB before the measured work)."""
    import torch

    from medwb.data import open_dataset

    torch.set_num_threads(1)
    warm_up()
    ds = open_dataset(pool, progress=False)
    ds.cohort  # noqa: B018 - statistics cached by the parent
    return ds, peak_rss_mb()


def measured_child(script: str, *args: str, what: str) -> dict:
    """Run ``script --child ARGS`` in a fresh process (its own peak memory) and return the JSON it printed last."""
    r = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{what} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def parse_or_serve_child(ap: argparse.ArgumentParser, child) -> argparse.Namespace | None:
    """The memory benchmarks' entry: offline; with ``--child A B`` run ``child(A, B)``, print its JSON and return
    None, else the parent's arguments."""
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("MEDWB_OFFLINE", "1")
    if a.child:
        print(json.dumps(child(*a.child)))
        return None
    return a


def warm_up() -> None:
    """Import on a worker what scoring a shard imports (torch, MONAI, medwb's data and models)."""
    import medwb.compute.shard  # noqa: F401
    import medwb.data  # noqa: F401
    import medwb.models  # noqa: F401
    import medwb.models.uncertainty  # noqa: F401


def run_mode(mode: str, model: str, pool: str, out: str, mc: int, shard_size: int) -> dict:
    """Score the pool one way in this (child) process; timings and peak RSS of the client and each worker."""
    import torch

    from medwb.compute import score_pool, write_scores
    from medwb.data import open_dataset

    warm_up()  # imports paid before any timer, in every mode
    ds = open_dataset(pool, progress=False)
    ds.cohort  # noqa: B018 - the statistics cache is warm for every mode (the parent built it)
    kw = dict(shard_size=shard_size, mc_samples=mc, seed=0, progress=False)
    rec: dict = {"mode": mode, "startup_s": 0.0, "workers_rss_mb": []}
    if mode.startswith("in-process"):
        torch.set_num_threads(1 if "1 thread" in mode else 2)
        t = time.perf_counter()
        df = score_pool(model, ds, **kw)
        rec["score_s"] = time.perf_counter() - t
    else:
        from medwb.compute.cluster import dask_client

        t = time.perf_counter()
        # medwb's LocalCluster: loopback, single-thread workers, and this process's environment kept (the nanny's
        # settings would otherwise reach every later subprocess of the benchmark)
        with dask_client("local", workers=int(mode.split()[0])) as client:
            client.run(warm_up)  # the workers' imports (torch, MONAI, medwb) count as startup, not scoring
            rec["startup_s"] = time.perf_counter() - t
            t = time.perf_counter()
            df = score_pool(model, pool, client=client, **kw)
            rec["score_s"] = time.perf_counter() - t
            rec["workers_rss_mb"] = sorted(client.run(peak_rss_mb).values())
            rec["worker_threads"] = sorted(set(client.run(torch.get_num_threads).values()))
    write_scores(df, out)
    rec["client_rss_mb"] = peak_rss_mb()
    rec["n"] = len(df)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="pool size (default 20000)")
    ap.add_argument("--mc", type=int, default=20, help="MC-dropout passes (default 20)")
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--data", default=None, help="score this npz instead of building the tiled pool")
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scores", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("MEDWB_OFFLINE", "1")
    if a.child:
        print(json.dumps(run_mode(a.child, a.model, a.data, a.scores, a.mc, a.shard_size)))
        return
    a.load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medwb-bench-score-") as tmp:
        folder = Path(tmp)
        os.environ["MEDWB_CACHE"] = str(folder / "cache")  # the statistics cache stays in the temp dir
        from medwb.data import open_dataset
        from medwb.models import build_classifier, save_checkpoint

        pool = Path(a.data) if a.data else build_pool(a.n, folder)
        open_dataset(pool, progress=False).cohort  # noqa: B018 - statistics once, cached for every mode
        model = save_checkpoint(build_classifier(2, 1, 2, seed=0, channels=(8, 16, 32, 64)), folder / "m.pt")
        rows, scores = [], {}
        for mode in MODES:
            out = folder / f"{mode.replace(' ', '_').replace(',', '')}.parquet"
            cmd = [sys.executable, __file__, "--child", mode, "--model", str(model), "--data", str(pool),
                   "--scores", str(out), "--mc", str(a.mc), "--shard-size", str(a.shard_size)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{mode} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            import pandas as pd

            scores[mode] = pd.read_parquet(out)
            print(f"{mode}: {rows[-1]['score_s']:.1f} s", flush=True)
        text = report(rows, scores, a)
    print(text)
    Path(a.out).write_text(text)


def report(rows: list[dict], scores: dict, a: argparse.Namespace) -> str:
    """The results table in Markdown, with ratios, agreement with in-process, the command and the machine."""
    base = scores[MODES[0]]
    by = {r["mode"]: r for r in rows}
    lines = ["| mode | startup s | score s | cases/s | vs in-process (2 threads) | vs 1 worker | peak RSS client MB "
             "| peak RSS per worker MB | max abs diff vs in-process |", "|" + "---|" * 9]
    for r in rows:
        s = scores[r["mode"]]
        diff = max(float(np.abs(s["uncertainty"].to_numpy() - base["uncertainty"].to_numpy()).max()),
                   float(np.abs(np.stack(s["embedding"]) - np.stack(base["embedding"])).max()))
        same = list(s["case_id"]) == list(base["case_id"]) and (s["predicted_class"] == base["predicted_class"]).all()
        one = by.get("1 worker")
        vs1 = f"{r['score_s'] / one['score_s']:.2f}x" if one and "worker" in r["mode"] else ""
        workers = ", ".join(f"{m:.0f}" for m in r["workers_rss_mb"]) or "-"
        lines.append(f"| {r['mode']} | {r['startup_s']:.1f} | {r['score_s']:.1f} | {r['n'] / r['score_s']:.0f} | "
                     f"{r['score_s'] / by[MODES[0]]['score_s']:.2f}x | {vs1} | {r['client_rss_mb']:.0f} | {workers} | "
                     f"{diff:.1e}{'' if same else ' (order or classes differ!)'} |")
    cmd = "  ".join(["python benchmarks/compute/bench_score.py", f"--n {a.n}", f"--mc {a.mc}",
                     f"--shard-size {a.shard_size}"] + ([f"--data {a.data}"] if a.data else []))
    return "\n".join([
        "# Pool scoring: in process vs Dask LocalCluster (medwb.compute)", "",
        f"Command: `{cmd.replace('  ', ' ')}`", "",
        f"Pool: {rows[0]['n']} cases ({'tiled PneumoniaMNIST train images with seeded flips, shifts and brightness' if not a.data else a.data}), "
        f"28x28, T={a.mc} MC-dropout passes (fast path) + embeddings, shards of {a.shard_size} cases; the tiny "
        "classifier (channels 8-16-32-64). Each mode runs in its own process; 'startup' is the LocalCluster's start "
        "and the workers' imports, 'score' is the score_pool call (workers open the npz themselves on their first "
        "shard).", "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), " + (
            f"idle before the run (1-minute load average {a.load[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
            "this run's own processes included). " if a.load[0] < 0.5 else
            f"**shared with other jobs while this ran** (1-minute load average {a.load[0]:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores): with no idle core a second worker has "
            "nothing to run on, and 2 torch threads spin against the other jobs, so the timings carry that noise. ")
        + "Workers are single-thread processes (Dask's "
        "nanny sets 1 torch thread); the in-process rows use 2 and 1 torch threads. Peak RSS is each process's "
        "VmHWM; torch + MONAI + Dask imports alone are ~500 MB of it.", "",
        *lines, ""])


if __name__ == "__main__":
    main()
