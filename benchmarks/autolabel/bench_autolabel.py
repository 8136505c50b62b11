"""Auto-label error where it matters: on the batches active learning actually proposed.

For every round of every PneumoniaMNIST active-learning study (made by ``benchmarks/active_learning/run.sh
pneumonia``; its studies folder must exist), the previous round's model pre-labels the proposed batch. The
auto-accept threshold (2% target, 95% Clopper-Pearson bound, temperature fitted on the validation split) is
chosen two ways:

* ``whole``: on the whole validation split (what medwb did first);
* ``uncertain``: on the validation cases at least as uncertain (1 - max MC-dropout mean probability) as the
  least uncertain case of the batch;
* ``like-batch``: on the validation cases at least as uncertain *and* as novel (embedding distance to the nearest
  labelled case) as the easiest batch case (``medwb.al.autolabel.cases_like_batch`` with
  ``medwb.al.autolabel.batch_difficulty``, what the loop does now).

The auto-accepted labels are compared with the ground truth. Two references use the whole-split threshold:
every case still unlabelled in the pool at that round (a random-like batch as large as the pool) and the
official test split (a shifted distribution: other hospital period, other pneumonia share).

Run from the repository root (venv active): ``python benchmarks/autolabel/bench_autolabel.py``
Writes ``benchmarks/autolabel/rounds.csv`` and ``results.txt`` (also printed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medwb.al.autolabel import autolabel_report, cases_like_batch, error_upper_bound, fit_autolabel, prelabel
from medwb.data import open_dataset
from medwb.al.autolabel import batch_difficulty
from medwb.models import load_checkpoint, predict_proba
from medwb.store import Study

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STUDIES = ROOT / "benchmarks" / "active_learning" / "pneumoniamnist" / "studies"
DATA = ROOT / "data_samples" / "classification_2d" / "pneumoniamnist.npz"
TARGET, PASSES = 0.02, 20


def outcome(probs: np.ndarray, y: np.ndarray, temperature: float, threshold: float) -> tuple[int, int, int]:
    """(cases, auto-accepted, wrong among the auto-accepted)."""
    rep = autolabel_report(prelabel(probs, temperature, threshold), y)
    return rep["n"], rep["n_auto"], rep["n_auto_errors"]


def main() -> None:
    if not STUDIES.is_dir():
        raise SystemExit(f"{STUDIES.relative_to(ROOT)} is missing: run `bash benchmarks/active_learning/run.sh pneumonia`")
    ds = open_dataset(DATA, progress=False)
    X, y, ids = ds.arrays("train")
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    pos = {c: i for i, c in enumerate(ids)}
    rows = []
    for folder in sorted(p for p in STUDIES.iterdir() if (p / "study.sqlite").is_file() and "-seed" in p.name):
        strategy, seed = folder.name.rsplit("-seed", 1)
        if strategy == "full":
            continue
        with Study.open(folder) as st:
            models, rounds = st.models().sort_values("round"), st.rounds().sort_values("number")
            labels = st.labels(latest=True)
            labelled_in = dict(zip(labels["case_id"].astype(str), labels["round"]))
        for r in rounds.itertuples(index=False):
            prev = models[models["round"] == r.number - 1]
            if len(prev) == 0:  # the cold-start batch: no model, no pre-label
                continue
            model, _ = load_checkpoint(prev.iloc[0]["checkpoint_path"])
            batch = np.array([pos[str(c)] for c in r.selected_ids])
            pool = np.array([pos[c] for c in ids if labelled_in.get(c, 10**9) >= r.number])  # unlabelled then
            labelled = np.array([pos[c] for c, k in labelled_in.items() if k < r.number and c in pos], dtype=int)
            pv = predict_proba(model, Xv)
            temperature, whole = fit_autolabel(pv, yv, target_error=TARGET)
            u_v, u_b, n_v, n_b = batch_difficulty(model, Xv, X[batch], X[labelled], passes=PASSES, seed=int(seed))
            _, unc = fit_autolabel(pv, yv, target_error=TARGET, threshold_cases=cases_like_batch(u_v, u_b))
            _, like = fit_autolabel(pv, yv, target_error=TARGET, threshold_cases=cases_like_batch(u_v, u_b, n_v, n_b))
            pb = predict_proba(model, X[batch])
            row = {"strategy": strategy, "seed": int(seed), "round": int(r.number)}
            for name, thr in (("whole", whole.threshold), ("uncertain", unc.threshold), ("like_batch", like.threshold)):
                n, a, e = outcome(pb, y[batch], temperature, thr)
                row.update({"n_batch": n, f"{name}_auto": a, f"{name}_errors": e})
            for name, (A, t) in (("pool", (X[pool], y[pool])), ("test", (Xt, yt))):
                n, a, e = outcome(predict_proba(model, A), t, temperature, whole.threshold)
                row.update({f"{name}_n": n, f"{name}_auto": a, f"{name}_errors": e})
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "rounds.csv", index=False)

    def cell(a: int, e: int, n: int) -> str:
        rate = "-" if a == 0 else f"{e / a:.2%}"
        return f"{a:>5} ({a / n:>4.0%}) {e:>3} {rate:>6} <={error_upper_bound(e, a):.2%}"

    lines = [f"PneumoniaMNIST AL batches, 3 seeds, rounds 2-5 (pre-labels by the previous round's model); "
             f"target {TARGET:.0%}; cell = auto-accepted (coverage) errors error <=95% upper bound",
             f"{'strategy':<10}{'proposed':>9}  {'whole-split threshold':<36}{'as uncertain as the batch':<36}"
             f"{'as uncertain and novel (now)':<36}"]
    order = [s for s in ("random", "entropy", "bald", "hybrid", "coreset", "badge") if s in set(df["strategy"])]
    for s in order:
        g = df[df["strategy"] == s].sum(numeric_only=True)
        lines.append(f"{s:<10}{int(g.n_batch):>9}  {cell(int(g.whole_auto), int(g.whole_errors), int(g.n_batch)):<36}"
                     f"{cell(int(g.uncertain_auto), int(g.uncertain_errors), int(g.n_batch)):<36}"
                     f"{cell(int(g.like_batch_auto), int(g.like_batch_errors), int(g.n_batch)):<36}")
    g = df.sum(numeric_only=True)
    lines.append(f"{'all':<10}{int(g.n_batch):>9}  {cell(int(g.whole_auto), int(g.whole_errors), int(g.n_batch)):<36}"
                 f"{cell(int(g.uncertain_auto), int(g.uncertain_errors), int(g.n_batch)):<36}"
                 f"{cell(int(g.like_batch_auto), int(g.like_batch_errors), int(g.n_batch)):<36}")
    lines.append("")
    lines.append("references with the whole-split threshold, summed over the same models:")
    for name, what in (("pool", "unlabelled pool at each round"), ("test", "official test split (shifted)")):
        lines.append(f"  {what:<32} {cell(int(g[f'{name}_auto']), int(g[f'{name}_errors']), int(g[f'{name}_n']))}")
    text = "\n".join(lines)
    (HERE / "results.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
