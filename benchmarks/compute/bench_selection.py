"""Selection on a 100k-case pool: time and peak memory of each strategy (issue 15 target: core-set and hybrid
on 100k embeddings in <= 30 s and <= 2 GB).

Each strategy runs in its own child process (peak RSS = that process's ru_maxrss, the input arrays included),
on the same seeded pool: 100k embeddings of 128 dimensions drawn around 50 centres (clustered, like a real
SimCLR embedding), class probabilities for 8 classes and, for BALD / hybrid, 20 MC samples; 1 000 of the pool
already labelled; a batch of k = 1 000. Reference row: ``random`` (the arrays alone).

    OMP_NUM_THREADS=1 python benchmarks/compute/bench_selection.py [--n 100000] [--k 1000] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

STRATEGIES = ("random", "entropy", "bald", "coreset", "hybrid", "badge", "cold_start")


def pool(n: int, dim: int = 128, classes: int = 8, mc: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """The seeded synthetic pool every strategy sees."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (50, dim)).astype(np.float32)
    which = rng.integers(0, 50, n)
    emb = centres[which] + rng.normal(0, 0.5, (n, dim)).astype(np.float32)
    logits = rng.normal(0, 1, (n, classes)).astype(np.float32) + 2 * np.eye(classes, dtype=np.float32)[which % classes]
    mc_logits = logits[None] + rng.normal(0, 0.5, (mc, n, classes)).astype(np.float32)
    mc_probs = np.exp(mc_logits - mc_logits.max(-1, keepdims=True))
    mc_probs /= mc_probs.sum(-1, keepdims=True)
    return {"embeddings": emb, "mc_probs": mc_probs, "probs": mc_probs.mean(0)}


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss is carried over fork/exec from the parent)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, n: int, k: int) -> None:
    from medwb.al.acquire import select

    data = pool(n)
    labelled = data["embeddings"][:1000]
    kw: dict[str, np.ndarray] = {"embeddings": data["embeddings"][1000:]}
    if name in ("bald", "hybrid"):
        kw["mc_probs"] = data["mc_probs"][:, 1000:]
    elif name in ("entropy", "badge"):
        kw["probs"] = data["probs"][1000:]
    rss_inputs = peak_rss_mb()
    t0 = time.perf_counter()
    idx, _ = select(name, k, random_state=0, labeled_embeddings=labelled, **kw)
    seconds = time.perf_counter() - t0
    assert len(set(map(int, idx))) == k
    print(json.dumps({"strategy": name, "seconds": seconds, "rss_inputs_mb": rss_inputs,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--out")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.n, a.k)
        return
    rows = []
    for name in STRATEGIES:
        r = subprocess.run([sys.executable, __file__, "--child", name, "--n", str(a.n), "--k", str(a.k)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [f"Selection of k = {a.k} from a pool of {a.n - 1000} (+1000 labelled), 128-d embeddings, 8 classes, "
             "20 MC samples; one child process per strategy",
             "", "| strategy | seconds | peak RSS (MB) | of which inputs (MB) |", "|---|---|---|---|"]
    lines += [f"| {r['strategy']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['rss_inputs_mb']:.0f} |"
              for r in rows]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
