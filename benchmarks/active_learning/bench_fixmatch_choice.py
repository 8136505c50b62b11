"""Does validation keep the better of a round's two candidates (supervised, FixMatch)? A paired audit.

Each round of medwb's default pipeline trains a supervised and a FixMatch candidate from the same pretrained start
and keeps one by its validation score (``medwb.al.fit``). In a simulation the round also stores both candidates'
test metrics (``test_*_supervised``, ``test_*_semi``), so every round that trained both is a paired comparison:
which one validation preferred, by how much, and which one the test split preferred.

This runs the demo's configuration (``medwb demo``: PneumoniaMNIST, 1000-case pool, 10% in 4 rounds, 10 epochs
of >= 16 batches, FixMatch 8 steps per epoch, SimCLR 300 steps), hybrid arm only, ``--seeds`` seeds, and writes
``OUT/pairs.csv`` (one row per round that trained both) and ``OUT/README.md`` (the table). Re-running reads the
finished studies back (nothing is retrained).

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_fixmatch_choice.py OUT [--seeds 4 --first-seed 0 --data NPZ]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--data", default="data_samples/classification_2d/pneumoniamnist.npz")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    a = ap.parse_args()
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))

    from medwb.al.fit import FIXMATCH_MARGIN
    from medwb.models.pretrain import PretrainConfig
    from medwb.pipelines.simulate import run_simulation
    from medwb.store import Study

    out = Path(a.out)
    sim = out / "sim"
    run_simulation(a.data, strategies=["hybrid"], budget=0.1, rounds=4, seeds=seeds, out_dir=sim, epochs=10,
                   max_pool=1000, train={"min_batches_per_epoch": 16}, pretrain_config=PretrainConfig(steps=300),
                   reference_seeds=0, semi_schedule={"steps_per_epoch": 8}, workers=1, progress=False)
    rows = []
    for seed in seeds:
        with Study.open(sim / "studies" / f"hybrid-seed{seed}") as study:
            for _, r in study.models().iterrows():
                m = r["metrics"]
                if "test_auc_semi" not in m:
                    continue  # FixMatch was not trained this round (dropped after a clear loss)
                rows.append({"seed": seed, "round": int(r["round"]), "labels": int(m["n_labeled"]),
                             "kept": "FixMatch" if m["semi"] else "supervised",
                             "val_semi_minus_supervised": m["val_score_semi"] - m["val_score_supervised"],
                             "test_auc_supervised": m["test_auc_supervised"], "test_auc_semi": m["test_auc_semi"],
                             "test_balacc_supervised": m["test_balanced_accuracy_supervised"],
                             "test_balacc_semi": m["test_balanced_accuracy_semi"]})
    t = pd.DataFrame(rows)
    t.to_csv(out / "pairs.csv", index=False, float_format="%.4f")
    t["test_auc_semi_minus_supervised"] = t["test_auc_semi"] - t["test_auc_supervised"]
    t["test_balacc_semi_minus_supervised"] = t["test_balacc_semi"] - t["test_balacc_supervised"]
    close = t["val_semi_minus_supervised"].abs() < FIXMATCH_MARGIN
    lines = ["| seed | round | labels | validation kept | val. score FixMatch - supervised | test AUC supervised / "
             "FixMatch | test bal. acc. supervised / FixMatch |", "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.seed} | {r.round} | {r.labels} | {r.kept} | {r.val_semi_minus_supervised:+.3f} | "
                     f"{r.test_auc_supervised:.3f} / {r.test_auc_semi:.3f} | "
                     f"{r.test_balacc_supervised:.3f} / {r.test_balacc_semi:.3f} |")

    def tally(sub: pd.DataFrame, what: str) -> str:
        d = sub[f"test_{what}_semi_minus_supervised"]
        return (f"FixMatch ahead on {int((d > 0).sum())} of {len(d)} (mean difference {d.mean():+.3f})"
                if len(d) else "none")

    lines += ["", f"Paired rounds: {len(t)}. Test AUC: {tally(t, 'auc')}; balanced accuracy: {tally(t, 'balacc')}.",
              f"Close calls (|validation difference| < {FIXMATCH_MARGIN}): {int(close.sum())}; test AUC: "
              f"{tally(t[close], 'auc')}; balanced accuracy: {tally(t[close], 'balacc')}.",
              f"Validation kept supervised training: {int((t['kept'] == 'supervised').sum())}; test AUC there: "
              f"{tally(t[t['kept'] == 'supervised'], 'auc')}."]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "table.md").write_text(text)


if __name__ == "__main__":
    main()
