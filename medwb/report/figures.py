"""Report figures (matplotlib): each function takes the tables from :mod:`medwb.report.stats` and returns a Figure.

Figures only draw; they compute nothing that a table does not already hold, so what the report shows and what
its CSVs say cannot disagree.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medwb.al.curves import FULL, REFERENCES


def _fig(w: float, h: float, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, ncols))
    return fig, axes


def roc_pr(curves: pd.DataFrame, class_names: Mapping[int, str] | None = None,
           aucs: Mapping[int, float] | None = None) -> Figure:
    """ROC (left) and precision-recall (right) curves, one line per class from ``stats.roc_pr_curves``."""
    names = class_names or {}
    fig, (a1, a2) = _fig(9, 4, 2)
    for c, d in curves.groupby("class", sort=True):
        label = names.get(int(c), str(c))
        roc = d[d["curve"] == "roc"]
        extra = f" (AUC {aucs[int(c)]:.3f})" if aucs and int(c) in aucs else ""
        a1.plot(roc["x"], roc["y"], lw=1.8, label=f"{label}{extra}")
        pr = d[d["curve"] == "pr"]
        a2.step(pr["x"], pr["y"], where="post", lw=1.8, label=label)
    a1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    a1.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    a2.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(0, 1),
           ylim=(0, 1.01))
    for a in (a1, a2):
        a.legend(loc="lower right" if a is a1 else "lower left", fontsize=8)
        a.grid(alpha=0.3)
    return fig


def reliability(table: pd.DataFrame, ece: float) -> Figure:
    """Reliability diagram (accuracy against confidence per bin) with the bin counts below."""
    fig = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    a1, a2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    t = table[table["count"] > 0]
    width = float(table["upper"].iloc[0] - table["lower"].iloc[0])
    centers = (t["lower"] + t["upper"]) / 2
    a1.bar(centers, t["accuracy"], width=width * 0.95, edgecolor="k", alpha=0.7, label="accuracy")
    a1.plot(t["confidence"], t["accuracy"], "o", c="C3", ms=4, label="mean confidence")
    a1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    a1.set(ylabel="accuracy in bin", title=f"Reliability (ECE = {ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    a1.legend(fontsize=8, loc="upper left")
    a2.bar(centers, t["count"], width=width * 0.95, color="grey")
    a2.set(xlabel="confidence (max probability)", ylabel="cases")
    return fig


def confusion(cm: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Confusion matrix with counts and row percentages (rows = truth)."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    fig, (ax,) = _fig(1.2 * k + 3, 1.0 * k + 2.5)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    im = ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            share = cm[i, j] / rows[i, 0]
            ax.text(j, i, f"{cm[i, j]}\n{share:.0%}", ha="center", va="center",
                    color="white" if share > 0.6 else "black", fontsize=9)
    ax.set(xticks=range(k), yticks=range(k), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    fig.colorbar(im, ax=ax, label="share of true class", shrink=0.8)
    return fig


def learning_curves(summary: pd.DataFrame, *, metrics: Sequence[str] | None = None) -> Figure:
    """Mean over seeds with a min-max band per strategy against labels used; ``full`` as a dashed reference.

    ``summary`` is ``stats.learning_curve_summary(curves)``.
    """
    metrics = list(metrics or sorted(summary["metric"].unique()))
    fig, axes = _fig(5 * len(metrics), 4, len(metrics))
    for ax, metric in zip(axes, metrics):
        s = summary[summary["metric"] == metric]
        for i, (strat, d) in enumerate(s[~s["strategy"].isin(REFERENCES)].groupby("strategy", sort=True)):
            d = d.sort_values("n_labeled")
            ax.plot(d["n_labeled"], d["mean"], marker="o", ms=3, c=f"C{i}", label=f"{strat} (n seeds={d['n_seeds'].max()})")
            ax.fill_between(d["n_labeled"], d["min"], d["max"], color=f"C{i}", alpha=0.2)
        refs = s[s["strategy"].isin(REFERENCES) & s["mean"].notna()]  # NaN: undefined (AUC on one class)
        if s["mean"].isna().all():
            ax.text(0.5, 0.5, f"{metric} undefined\n(e.g. AUC on a test split with one class)", ha="center",
                    va="center", transform=ax.transAxes, color="grey")
        if len(refs):  # the stronger all-labels reference (scratch, or pretrained + fine-tuned)
            best = refs.loc[refs["mean"].idxmax()]
            label = "all labels" if best["strategy"] == FULL else f"all labels ({best['strategy']})"
            ax.axhline(best["mean"], ls="--", c="k", lw=1, label=label)
            ax.axhline(0.98 * best["mean"], ls=":", c="grey", lw=1, label="98% of all labels")
        ax.set(xlabel="labelled cases", ylabel=metric, title=f"Learning curve: {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return fig


def forest(table: pd.DataFrame, *, metric: str = "auc", overall: float | None = None) -> Figure:
    """Forest plot: one row per subgroup value with its bootstrap CI for ``metric`` (``stats.subgroup_table``)."""
    t = table[(table["metric"] == metric)].reset_index(drop=True)
    fig, (ax,) = _fig(6, 0.4 * len(t) + 1.5)
    y = np.arange(len(t))[::-1]
    ok = t["estimate"].notna().to_numpy()
    ax.errorbar(t.loc[ok, "estimate"], y[ok],
                xerr=[t.loc[ok, "estimate"] - t.loc[ok, "ci_low"], t.loc[ok, "ci_high"] - t.loc[ok, "estimate"]],
                fmt="s", c="C0", capsize=3)
    for yi, row in zip(y, t.itertuples(index=False)):
        if not np.isfinite(row.estimate):
            ax.text(0.5, yi, f"too few cases (n={row.n})", va="center", fontsize=8, color="grey",
                    transform=ax.get_yaxis_transform())
    if overall is not None and np.isfinite(overall):
        ax.axvline(overall, ls="--", c="grey", lw=1, label="all test cases")
        ax.legend(fontsize=8)
    ax.set_yticks(y, [f"{r.column} = {r.group} (n={r.n})" for r in t.itertuples(index=False)])
    ax.set(xlabel=f"{metric} (95% CI)", title=f"Subgroups: {metric}")
    ax.grid(alpha=0.3, axis="x")
    return fig


def bar_counts(counts: pd.Series, *, title: str, xlabel: str = "") -> Figure:
    """A small horizontal bar chart for count tables (label sources, verdicts)."""
    fig, (ax,) = _fig(5, 0.35 * len(counts) + 1.2)
    ax.barh([str(i) for i in counts.index][::-1], counts.to_numpy()[::-1], color="C0")
    for i, v in enumerate(counts.to_numpy()[::-1]):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    ax.set(title=title, xlabel=xlabel or "count")
    return fig


def validation_curve_figure(val: pd.DataFrame) -> Figure:
    """Validation metric against labelled cases, one line per metric (``medwb.al.curves.validation_curve``)."""
    fig, (ax,) = _fig(5, 3.5, 1)
    for metric, g in val.groupby("metric"):
        ax.plot(g["n_labeled"], g["value"], marker="o", label=metric)
    ax.set(xlabel="labelled cases", ylabel="validation metric")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def class_sweep_figure(sweep: pd.DataFrame) -> Figure:
    """Per metric, against the number of classes: the labels needed to reach 98% of all labels (filled markers;
    an open triangle at the budget's label count where the curve did not get there, i.e. more were needed) and,
    on the right axis, the share of the all-labels result reached at the budget (dashed). One colour per
    strategy; ``class_sweep.csv`` of :func:`medwb.pipelines.class_sweep.run_class_sweep`."""
    metrics = list(dict.fromkeys(sweep["metric"]))
    fig, axes = _fig(5.5 * len(metrics), 4, len(metrics))
    for ax, metric in zip(axes, metrics):
        s = sweep[sweep["metric"] == metric]
        share_ax = ax.twinx()
        for i, (strat, d) in enumerate(s.groupby("strategy", sort=False)):
            d = d.sort_values("n_classes")
            reached = d["labels_to_98pct"].notna()
            ax.plot(d["n_classes"][reached], d["labels_to_98pct"][reached], marker="o", c=f"C{i}",
                    label=f"{strat}: labels to 98%")
            if "labels_at_budget" in d and (~reached).any():
                ax.scatter(d["n_classes"][~reached], d["labels_at_budget"][~reached], marker="^",
                           facecolors="none", edgecolors=f"C{i}", s=60, label=f"{strat}: not reached within")
            share_ax.plot(d["n_classes"], d["share_of_full"], ls="--", c=f"C{i}", alpha=0.6,
                          label=f"{strat}: share of full at budget")
        ax.set(xlabel="number of classes", ylabel="labels to 98% of all labels",
               title=f"Labels needed vs classes: {metric}", xticks=sorted(s["n_classes"].unique()))
        ax.set_ylim(bottom=0)
        share_ax.set_ylabel("share of all-labels result at the budget")
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = share_ax.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    return fig
