"""Learning curves of active-learning runs: labels needed to reach a share of the all-labels result.

Why here: the simulation writes these summaries and the validation report reads them; both sit above ``al``, so
the one definition lives with the loop whose curves they describe.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.metrics import format_metric

if TYPE_CHECKING:
    from medwb.store import Study

#: the strategy name of the all-labels reference rows in ``curves.csv`` (the network trained from scratch)
FULL = "full"
#: the all-labels reference of a pretrained simulation (``medwb simulate --pretrain``): same network and schedule,
#: starting from the pretrained trunk
FULL_PRETRAINED = "full-pretrained"
#: every all-labels reference (not a strategy: no learning curve)
REFERENCES = (FULL, FULL_PRETRAINED)


def labels_to_reach(n_labeled: Sequence[float], values: Sequence[float], target: float) -> float:
    """Labels at which the curve first reaches ``target``, linearly interpolated; NaN when never reached.

    If the first point already reaches it, that point's label count is returned (the curve says nothing about
    fewer labels).
    """
    n = np.asarray(n_labeled, dtype=float)
    v = np.asarray(values, dtype=float)
    order = np.argsort(n)
    n, v = n[order], v[order]
    hit = np.flatnonzero(v >= target)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(n[0])
    n0, n1, v0, v1 = n[i - 1], n[i], v[i - 1], v[i]
    return float(n0 + (target - v0) * (n1 - n0) / (v1 - v0)) if v1 != v0 else float(n1)


def summarize(curves: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Per strategy and metric: value at the budget, share of the full-data value, labels to 95% / 98% of full.

    The strategy curve is the mean over seeds per round; the full-data value is the mean of the seeds' "full"
    rows, or, when the curves also hold "full-pretrained" rows (``--pretrain``), the stronger (higher) of the
    two references per metric (column ``full_reference`` names it): a pretrained run is measured against the
    best all-labels result known, not against a weaker scratch model. Curves without them read as before.
    The value "at the budget" is the first round that reaches the budget fraction (else the last round).
    """
    refs = curves[curves["strategy"].isin(REFERENCES)].groupby(["metric", "strategy"])["value"].mean()
    # an undefined reference (NaN: an AUC on a one-class test split) is never the stronger one, nor an error
    best = {m: refs[m].dropna().idxmax() if refs[m].notna().any() else refs[m].index[0]
            for m in refs.index.get_level_values(0).unique()} if len(refs) else {}
    full = pd.Series({m: refs[(m, r)] for m, r in best.items()}, dtype=float)
    pool = curves.loc[curves["strategy"].isin(REFERENCES), "n_labeled"].max()
    rows = []
    al = curves[~curves["strategy"].isin(REFERENCES)]
    for (strategy, metric), g in al.groupby(["strategy", "metric"], sort=False):
        mean = g.groupby("n_labeled")["value"].agg(["mean", "std", "count"]).reset_index()
        # the first round that reaches the budget (equal batches are rounded up, so the last round may
        # overshoot it by a few labels); the last round when the curve stops short of it
        at = g[g["fraction_labeled"] >= budget - 1e-9]
        last_n = at["n_labeled"].min() if len(at) else mean["n_labeled"].max()
        per_seed = g[g["n_labeled"] == last_n]["value"]
        f = float(full.get(metric, float("nan")))
        row: dict[str, Any] = {
            "strategy": strategy, "metric": metric, "seeds": int(g["seed"].nunique()),
            "n_labeled_at_budget": int(last_n), "fraction_at_budget": float(last_n / pool) if pool else math.nan,
            "value_at_budget": float(per_seed.mean()), "std_at_budget": float(per_seed.std(ddof=0)),
            "full_value": f, "share_of_full": float(per_seed.mean() / f) if f else math.nan,
            "full_reference": best.get(metric, ""),
        }
        for pct in (95, 98):
            n_req = labels_to_reach(mean["n_labeled"], mean["mean"], pct / 100 * f) if f == f else math.nan
            row[f"labels_to_{pct}pct"] = n_req
            row[f"fraction_to_{pct}pct"] = n_req / pool if pool and n_req == n_req else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def compare_arms(summary: pd.DataFrame, arm: str, baseline: str) -> pd.DataFrame:
    """Per metric: ``arm`` against ``baseline`` from a :func:`summarize` table (e.g. medwb's default pipeline
    against random + scratch): value at the budget of each, labels each needs to reach 98% of the all-labels
    result, and ``label_ratio`` = arm's labels / baseline's (below 1: the arm saves labels). A baseline that
    never reaches 98% within the budget gives ``label_ratio`` as an upper bound against the budget
    (``ratio_is_bound`` True); an arm that never reaches it gives NaN."""
    a = summary[summary["strategy"] == arm].set_index("metric")
    b = summary[summary["strategy"] == baseline].set_index("metric")
    rows = []
    for metric in [m for m in a.index if m in b.index]:
        na, nb = float(a.loc[metric, "labels_to_98pct"]), float(b.loc[metric, "labels_to_98pct"])
        bound = nb != nb and na == na
        nb_eff = float(b.loc[metric, "n_labeled_at_budget"]) if bound else nb
        rows.append({"metric": metric, "arm": arm, "baseline": baseline,
                     "arm_at_budget": float(a.loc[metric, "value_at_budget"]),
                     "baseline_at_budget": float(b.loc[metric, "value_at_budget"]),
                     "full_value": float(a.loc[metric, "full_value"]),
                     "arm_labels_to_98pct": na, "baseline_labels_to_98pct": nb,
                     "label_ratio": na / nb_eff if na == na and nb_eff else math.nan, "ratio_is_bound": bound})
    return pd.DataFrame(rows)


def format_comparison(cmp: pd.DataFrame) -> str:
    """The headline lines of :func:`compare_arms` for a console or an index page."""
    lines = []
    for r in cmp.itertuples(index=False):
        def need(n: float) -> str:
            return "not reached" if n != n else f"{n:.0f}"

        ratio = ("n/a" if r.label_ratio != r.label_ratio else
                 f"{'< ' if r.ratio_is_bound else ''}{r.label_ratio:.2f}x the labels")
        lines.append(f"{r.metric}: {r.arm} {format_metric(r.arm_at_budget)} vs {r.baseline} "
                     f"{format_metric(r.baseline_at_budget)} at the budget (all labels {format_metric(r.full_value)}); "
                     f"labels to 98% of all labels: {need(r.arm_labels_to_98pct)}"
                     f" vs {need(r.baseline_labels_to_98pct)} ({ratio})")
    return "\n".join(lines)


#: the validation metrics a round records, one per task
VALIDATION_METRICS = ("val_auc", "val_accuracy", "val_dice")


def validation_curve(study: Study) -> pd.DataFrame:
    """The study's validation metrics per round (``study.metrics_curve()`` rows of VALIDATION_METRICS): the
    learning curve a person follows while labelling (the test split stays for the report)."""
    curve = study.metrics_curve()
    return curve[curve["metric"].isin(VALIDATION_METRICS)].reset_index(drop=True)


def autolabel_by_round(study: Study) -> pd.DataFrame:
    """One row per registered model: its round and the ``autolabel_*`` metrics of the batch it pre-labelled
    (threshold, coverage, error; empty columns before any model existed)."""
    return pd.DataFrame([{"round": m["round"], **{k: v for k, v in m["metrics"].items() if k.startswith("autolabel_")}}
                         for m in study.models().to_dict("records")])
