"""Active-learning simulation: run the loop with a ground-truth oracle and compare strategies honestly.

For each strategy and seed a real study folder is written (``OUT/studies/<strategy>-seed<k>/``), so a killed
simulation resumes where it stopped and every curve point can be traced to a stored model. The all-labels
reference ("full") trains the same network with the same schedule on every pool label, once per seed.

Outputs: ``curves.csv`` (strategy, seed, round, n_labeled, fraction_labeled, metric, value; test split),
``summary.csv``, ``curves.png`` (mean over seeds with a min-max band) and the printed table (``table.txt``); with
``max_pool``, ``held_out.csv``: the same rows on the training cases the pool left out (:func:`held_out_arrays`).
Several simulations may share one ``--out`` (other strategies, other seeds, in parallel): ``curves.csv``,
``autolabel.csv`` and ``held_out.csv`` keep the rows of every (strategy, seed) another run wrote, merged under a lock
(``OUT/.simulate.lock``), and the summary covers them all. Every output, sibling study and cache is registered in
each study (:mod:`medwb.store.artifacts`), so ``medwb purge`` of any of them removes the whole simulation.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.al.curves import FULL, FULL_PRETRAINED, REFERENCES, summarize
from medwb.al.fit import WarmStart, check_warm_start
from medwb.al.representation import check_finetune, uses_pretraining
from medwb.atomic import atomic_write_bytes, ensure_output_dir, exclusive_lock
from medwb.errors import DataError
from medwb.metrics import format_metric, metric_value
from medwb.privacy.outputs import protect_output
from medwb.store import cipher, files

Writer = Callable[[Path, bytes], Path]

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key
    from medwb.al.loop import ActiveLearningLoop
    from medwb.data.dataset import Dataset
    from medwb.models.pretrain import PretrainConfig, PretrainResult
    from medwb.store import Study

CURVE_COLUMNS = ["strategy", "seed", "round", "n_labeled", "fraction_labeled", "metric", "value"]

#: how an arm's rounds train: (self-supervised pretraining on the pool, FixMatch on the pool; None = the task's
#: default: medwb.al.representation.uses_pretraining, medwb.al.fit.uses_semi). "medwb" is the loop's default;
#: "scratch" is what users do without medwb: supervised from random init on the labels only
PIPELINES: dict[str, tuple[bool | None, bool | None]] = {"medwb": (None, None), "pretrained": (True, False),
                                                  "semi": (False, True), "scratch": (False, False)}


@dataclass(frozen=True)
class Arm:
    """One simulated arm: an acquisition strategy and a training pipeline (``STRATEGY[:PIPELINE]``)."""

    strategy: str
    pipeline: str = "medwb"

    @property
    def label(self) -> str:
        """Name in curves.csv / summary.csv and of the study folders: the strategy alone for the default
        pipeline, else ``strategy-pipeline`` (e.g. ``random-scratch``)."""
        return self.strategy if self.pipeline == "medwb" else f"{self.strategy}-{self.pipeline}"

    @property
    def pretrain(self) -> bool | None:
        return PIPELINES[self.pipeline][0]

    def pretrains(self, dataset: Dataset) -> bool:
        """Whether this arm's rounds start from the pretrained trunk on ``dataset`` (its pipeline, or the task's
        default: :func:`~medwb.al.representation.uses_pretraining`)."""
        return uses_pretraining(dataset.task, dataset.ndim, self.pretrain)

    @property
    def semi(self) -> bool | None:
        return PIPELINES[self.pipeline][1]


def parse_arm(spec: str, pipeline: str = "medwb") -> Arm:
    """``"hybrid"`` -> Arm("hybrid", pipeline); ``"random:scratch"`` -> Arm("random", "scratch")."""
    from medwb.al.acquire import check_strategy
    from medwb.errors import ConfigError

    strategy, _, pipe = str(spec).partition(":")
    pipe = pipe or pipeline
    if pipe not in PIPELINES:
        raise ConfigError(f"{spec!r}: {pipe!r} is not a training pipeline; use one of {', '.join(PIPELINES)} "
                          "(medwb = pretrained + semi-supervised, scratch = supervised from random init)")
    check_strategy(strategy)
    return Arm(strategy, pipe)


def metrics_for(task: str) -> list[str]:
    """Metrics reported per task (classification: AUC, accuracy and balanced accuracy, which shows a model that
    predicts one class for nearly everything; segmentation: Dice)."""
    return ["auc", "accuracy", "balanced_accuracy"] if task == "classification" else ["dice"]


def format_table(summary: pd.DataFrame, budget: float) -> str:
    """The printed comparison: one line per strategy and metric."""
    def need(n: float, fr: float) -> str:
        return "not reached" if n != n else f"{n:.0f} ({fr:.1%})"

    lines = [f"{'strategy':<16}{'metric':<10}{'at budget (' + format(budget, '.0%') + ')':>22}"
             f"{'full':>10}{'share':>10}{'labels to 95%':>18}{'labels to 98%':>18}"]
    for r in summary.itertuples(index=False):
        at = (f"{r.value_at_budget:.3f}±{r.std_at_budget:.3f}" if math.isfinite(r.value_at_budget) else "undefined")
        at += f" @{r.n_labeled_at_budget}"
        lines.append(f"{r.strategy:<16}{r.metric:<10}{at:>22}{format_metric(r.full_value):>10}"
                     f"{format_metric(r.share_of_full):>10}"
                     f"{need(r.labels_to_95pct, r.fraction_to_95pct):>18}"
                     f"{need(r.labels_to_98pct, r.fraction_to_98pct):>18}")
    return "\n".join(lines)


def plot_curves(curves: pd.DataFrame, path: str | Path, *, title: str = "",
                write: Writer = files.write_bytes) -> Path:
    """Learning curves (mean over seeds, min-max band) per metric, with the full-data value and 98% of it;
    ``write`` stores the PNG (default: encrypted inside an encrypted study or simulation folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(curves["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        c = curves[curves["metric"] == metric]
        for strategy, g in c[~c["strategy"].isin(REFERENCES)].groupby("strategy", sort=False):
            s = g.groupby("fraction_labeled")["value"].agg(["mean", "min", "max"]).reset_index()
            ax.plot(s["fraction_labeled"], s["mean"], marker="o", ms=3, label=strategy)
            ax.fill_between(s["fraction_labeled"], s["min"], s["max"], alpha=0.2)
        best = float("nan")
        for ref, ls, what in ((FULL, "--", "all labels"), (FULL_PRETRAINED, "-.", "all labels, pretrained")):
            f = c[c["strategy"] == ref]["value"]
            if len(f):
                ax.axhline(f.mean(), color="k", ls=ls, lw=1, label=f"{what} ({f.mean():.3f})")
                best = f.mean() if best != best else max(best, f.mean())
        if best == best:
            ax.axhline(0.98 * best, color="grey", ls=":", lw=1, label="98% of all labels")
        ax.set_xlabel("fraction of the pool labelled")
        ax.set_ylabel(f"test {metric}")
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "active learning: mean over seeds, band = min-max")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return write(Path(path), buf.getvalue())


AUTOLABEL_COLUMNS = ["strategy", "seed", "round", "n_batch", "n_auto", "n_auto_errors",
                     "pool_n", "pool_auto", "pool_errors", "test_n", "test_auto", "test_errors"]


def autolabel_from_study(study: Study, *, strategy: str, seed: int) -> pd.DataFrame:
    """Per round: the proposed batch size, how many pre-labels would have been auto-accepted at the loop's
    target error (threshold fitted on the validation split by the previous round's model, on validation cases as
    hard as the batch), and how many of those were wrong against ground truth; and, for the round's own model
    with the threshold fitted on the whole validation split, the same on the whole remaining pool and on the test
    split (``pool_*`` / ``test_*``; NaN where not recorded). Rounds without a model-made pre-label (the cold
    start) have NaN batch columns."""
    rows = []
    for m in study.models().sort_values("round").itertuples(index=False):
        metrics = m.metrics if isinstance(m.metrics, dict) else json.loads(m.metrics)
        row: list[Any] = [strategy, seed, int(m.round)]
        row += [metrics.get(k, math.nan) for k in ("autolabel_n", "autolabel_n_auto", "autolabel_n_auto_errors")]
        for name in ("pool", "test"):
            row += [metrics.get(f"autolabel_{name}_{k}", math.nan) for k in ("n", "n_auto", "n_errors")]
        rows.append(row)
    return pd.DataFrame(rows, columns=AUTOLABEL_COLUMNS)


def summarize_autolabel(rows: pd.DataFrame, confidence_level: float = 0.95) -> pd.DataFrame:
    """Per strategy: the proposed batches pooled over seeds and rounds (coverage of auto-acceptance, measured
    error of the auto-accepted labels, its one-sided Clopper-Pearson upper bound), and the last round's model
    on the whole remaining pool and on the test split, pooled over seeds (``pool_*``, ``test_*``)."""
    from medwb.al.autolabel import error_upper_bound

    out = []
    for strategy, g in rows.groupby("strategy", sort=False):
        b = g.dropna(subset=["n_batch"])
        n, a, e = int(b["n_batch"].sum()), int(b["n_auto"].sum()), int(b["n_auto_errors"].sum())
        row: dict[str, Any] = {"strategy": strategy, "proposed": n, "auto_accepted": a,
                               "coverage": a / n if n else math.nan, "errors": e, "auto_error": e / a if a else math.nan,
                               "auto_error_upper95": error_upper_bound(e, a, confidence_level)}
        last = g.sort_values("round").groupby("seed").tail(1)
        for name in ("pool", "test"):
            cols = last[[f"{name}_n", f"{name}_auto", f"{name}_errors"]].dropna()
            nn_, aa, ee = (int(v) for v in cols.sum()) if len(cols) else (0, 0, 0)
            row.update({f"{name}_coverage": aa / nn_ if nn_ else math.nan,
                        f"{name}_error": ee / aa if aa else math.nan,
                        f"{name}_error_upper95": error_upper_bound(ee, aa, confidence_level) if nn_ else math.nan})
        out.append(row)
    return pd.DataFrame(out)


def format_autolabel(summary: pd.DataFrame, target: float) -> str:
    lines = [f"auto-labels at a {target:.0%} target error (simulated annotator, so nothing was committed automatically)",
             "  batch: the proposed batches, threshold chosen on validation cases as hard as the batch (the loop's rule)",
             "  pool / test: the last round's model on the whole remaining pool and on the test split, threshold "
             "chosen on the whole validation split",
             f"{'strategy':<16}{'proposed':>10}{'auto-accepted':>16}{'errors':>8}{'error':>9}{'95% upper':>11}"
             f"{'pool cover':>12}{'pool err':>10}{'test cover':>12}{'test err':>10}"]

    def pct(v: float) -> str:
        return "-" if v != v else f"{v:.1%}"

    for r in summary.itertuples(index=False):
        err = "-" if r.auto_accepted == 0 else f"{r.auto_error:.2%}"
        lines.append(f"{r.strategy:<16}{r.proposed:>10}{f'{r.auto_accepted} ({r.coverage:.0%})':>16}{r.errors:>8}"
                     f"{err:>9}{r.auto_error_upper95:>11.2%}{pct(r.pool_coverage):>12}{pct(r.pool_error):>10}"
                     f"{pct(r.test_coverage):>12}{pct(r.test_error):>10}")
    return "\n".join(lines)


def curves_from_study(study: Study, *, strategy: str, seed: int, pool_size: int, task: str) -> pd.DataFrame:
    """Curve rows of one simulated study, read back from the models it recorded (test metrics per round)."""
    models = study.models()
    rows = []
    for m in models.sort_values("round").itertuples(index=False):
        metrics = m.metrics if isinstance(m.metrics, dict) else json.loads(m.metrics)
        n = int(metrics["n_labeled"])
        for metric in metrics_for(task):
            rows.append((strategy, seed, int(m.round), n, n / pool_size, metric,
                         metric_value(metrics.get(f"test_{metric}"))))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


#: at most this many of the training cases left out of a ``max_pool`` pool are re-scored (a seeded subset past it)
HELD_OUT_CAP = 2000
#: and at most this many voxels (or pixels) of them in all, so large volumes stay in a few hundred MB (64^3: 244)
HELD_OUT_VOXELS = 64_000_000


def held_out_arrays(loop: ActiveLearningLoop) -> tuple[np.ndarray, np.ndarray] | None:
    """(X, y) of the training cases ``loop``'s pool left out (``max_pool``; a seeded subset of at most
    :data:`HELD_OUT_CAP` cases and :data:`HELD_OUT_VOXELS` voxels), at the loop's size; None when the pool is the whole training split. They come from the pool's own
    distribution and no round trains on them, so scores on them say whether the picks helped where they were
    made, apart from a shift of the test split (on PneumoniaMNIST hybrid beat random there on every seed while
    trailing it on the test split, session 22)."""
    from medwb.data.splits import PoolInputs, carve_splits, seeded_subset

    ds, pool = loop.ds, set(loop.data.pool_ids())
    rest = [i for i in carve_splits(ds.cohort, name=ds.name)["train"] if i not in pool]
    if not rest:
        return None
    cap = held_out_cap(ds, loop.size)
    ids = seeded_subset(rest, cap, 0) if len(rest) > cap else rest
    X, y, _ = PoolInputs(ds, {"train": ids, "val": ids[:1], "test": ids[:1]}, loop.size)["train"]
    return X, y


def held_out_cap(ds: Dataset, size: Sequence[int] | None) -> int:
    """How many held-out cases are re-scored at ``size`` (None: the dataset's fixed native size):
    :data:`HELD_OUT_CAP`, fewer for large volumes."""
    if size is None:
        shape = ds.cohort["shape"].dropna().astype(str)
        size = [int(float(v)) for v in shape.iloc[0].split("x")] if len(shape) else [1]
    return max(1, min(HELD_OUT_CAP, HELD_OUT_VOXELS // max(1, math.prod(int(v) for v in size))))


def held_out_curves(loop: ActiveLearningLoop, held: tuple[np.ndarray, np.ndarray], *, strategy: str,
                    seed: int) -> pd.DataFrame:
    """Curve rows (:data:`CURVE_COLUMNS`) of every round model of ``loop``'s study re-scored on ``held``
    (:func:`held_out_arrays`), each with its own validation-chosen decision rule as on the test split."""
    from medwb.models import evaluate, load_checkpoint

    rows = []
    for m in loop.study.models().sort_values("round").itertuples(index=False):
        metrics = m.metrics if isinstance(m.metrics, dict) else json.loads(m.metrics)
        model, _ = load_checkpoint(m.checkpoint_path)
        scores, n = evaluate(model, *held), int(metrics["n_labeled"])
        for metric in metrics_for(loop.ds.task):
            rows.append((strategy, seed, int(m.round), n, n / loop.pool_size, metric, metric_value(scores.get(metric))))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def format_held_out(held: pd.DataFrame, summary: pd.DataFrame, budget: float, n_cases: int) -> str:
    """The table's in-distribution section: per arm and metric the value at the budget (mean ± SD over seeds) and
    the all-labels value, on the held-out cases (:func:`medwb.al.curves.summarize` of ``held``) against the test
    split's (``summary``)."""
    key = ["strategy", "metric"]
    cols = [*key, "value_at_budget", "std_at_budget", "full_value"]
    both = summarize(held, budget)[[*cols, "n_labeled_at_budget"]].merge(summary[cols], on=key,
                                                                         suffixes=("_held", "_test"))
    lines = [f"in distribution: each arm at the budget on {n_cases} training cases outside the pool (held_out.csv; "
             "the pool's own distribution, never trained on) against the test split",
             f"{'strategy':<16}{'metric':<20}{'labels':>7}{'held-out':>16}{'all labels':>12}{'test':>16}"
             f"{'all labels':>12}"]
    for r in both.itertuples(index=False):
        lines.append(f"{r.strategy:<16}{r.metric:<20}{r.n_labeled_at_budget:>7}"
                     f"{f'{r.value_at_budget_held:.3f}±{r.std_at_budget_held:.3f}':>16}{r.full_value_held:>12.3f}"
                     f"{f'{r.value_at_budget_test:.3f}±{r.std_at_budget_test:.3f}':>16}{r.full_value_test:>12.3f}")
    return "\n".join(lines)


def run_simulation(
    data: str | Path,
    *,
    strategies: Sequence[str],
    budget: float,
    rounds: int,
    seeds: int | Sequence[int],
    out_dir: str | Path,
    epochs: int | None = None,
    train: dict[str, Any] | None = None,
    cold_start: str = "auto",
    mc_passes: int = 20,
    max_pool: int | None = None,
    size: tuple[int, ...] | None = None,
    progress: bool = True,
    pipeline: str = "medwb",
    finetune: str = "full",
    pretrain_config: PretrainConfig | Mapping[str, float] | None = None,
    plaintext: bool = False,
    scoring: str | None = None,
    stream: bool = False,
    reference_seeds: int | None = None,
    workers: int = 1,
    semi_schedule: dict[str, float] | None = None,
    self_train: bool | None = None,
    warm_start: WarmStart = "auto",
) -> pd.DataFrame:
    """Simulate active learning for each arm and seed; write curves.csv, summary.csv, curves.png.

    ``strategies``: arms ``STRATEGY[:PIPELINE]`` (:func:`parse_arm`); without ``:PIPELINE`` an arm trains with
    ``pipeline``: ``medwb`` (the loop's default: SimCLR-pretrained trunk, rounds with FixMatch on the pool or supervised, FixMatch unless supervised validates clearly better),
    ``pretrained``, ``semi`` or ``scratch`` (supervised from random init on the labels only: what users do
    without medwb). ``random:scratch`` beside ``hybrid`` compares medwb with today's practice; ``random`` beside
    ``hybrid`` measures the acquisition gain on the same pipeline.

    ``budget`` is the final fraction of the pool labelled after ``rounds`` equal batches (the first one by the
    label-free ``cold_start`` strategy, random for the random baseline and, with ``cold_start="auto"``, in 3D and
    for segmentation: :func:`medwb.al.scoring.first_batch_strategy`). ``seeds``: how many (0..K-1), or
    an explicit list (to run seeds in parallel processes on one ``out_dir``; a final call with all of them
    only reads the finished studies back). ``epochs`` and ``train`` (other TrainConfig fields, e.g.
    ``{"batch_size": 8, "patience": 10}``) override :func:`medwb.models.default_train_config`; the same
    schedule trains every round and the all-labels references. Returns the summary table.

    Pretraining (any arm that pretrains) runs once per simulation (``pretrain_config``; cached in
    ``OUT/cache/pretrain``) and is shared by every arm and seed. All-labels references: ``full`` (supervised from
    scratch on every pool label) and, when an arm pretrains, ``full-pretrained`` (same network from the
    pretrained trunk); the summary's share of full and labels to 95/98% use the stronger of the two
    (:func:`medwb.al.curves.summarize`), so pretraining cannot lower the bar.

    With a key configured the studies are encrypted, and so is everything written in ``out_dir`` (the folder gets
    the study marker, :func:`protect_output`: tables, plot, pretraining cache); ``plaintext`` writes the tables
    and plot in clear instead, with a warning that they left the protected zone (they are registered for purge).

    ``scoring``: where each round's model scores the pool (the loop's ``scoring``): None / ``"memory"``, ``"shards"``,
    ``"local"`` (one Dask LocalCluster for the whole simulation, stopped after) or a scheduler address.
    ``stream``: the arms' loops never hold the pool (``ActiveLearningLoop(stream=True)``; pretraining streamed too;
    scoring "shards" unless given). The all-labels references still train on the whole pool in memory.

    ``reference_seeds``: train the all-labels references for the first N seeds only (None: every seed). The
    summary compares with the mean of the references' seeds, so one reference seed is enough where time is short
    (the demo): the reference's seed spread is small next to the arms' (PneumoniaMNIST, 1000-case pool, 3 seeds).
    ``semi_schedule``: FixMatch settings of the rounds beyond ``train`` (:class:`medwb.models.semi.SemiConfig`
    fields, e.g. ``{"steps_per_epoch": 8}``).
    ``self_train``: the rounds of the ``medwb``-pipeline arms also train a self-trained
    student (the loop's ``self_train``, :func:`medwb.al.fit.uses_self_training`: ``None``, segmentation only); the
    other arms and the references never do (an all-labels pool has nothing left to pseudo-label).
    ``warm_start``: the ``medwb``-pipeline arms' rounds after the first continue the last round's model for this
    many passes, or "auto", the default (the loop's ``warm_start``, classification,
    :func:`medwb.al.fit.continued_passes`), None: never; the other arms and the references train from the start.
    ``workers``: run the (arm, seed) units in this many processes of one thread each (longest units first);
    with 2 workers on 2 cores the simulation takes ~0.65x its single-process time, since a convolution step
    gains only ~1.5x from a second thread. The units are the same seeded computations either way (the numbers may
    differ in the last float digits with the thread count). Not with a Dask ``scoring`` (a client cannot travel
    to another process).
    """
    from contextlib import ExitStack

    from tqdm.auto import tqdm

    from medwb.compute.cluster import dask_client

    from medwb.data import open_dataset
    from medwb.models.pretrain import pretrain_config_on

    if not 0 < budget <= 1:
        raise DataError(None, f"budget={budget} is not a fraction in (0, 1]", "pass e.g. --budget 0.1 for 10%")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(k) for k in seeds]
    if rounds < 1 or not seed_list:
        raise DataError(None, f"rounds={rounds}, seeds={seeds}", "pass --rounds >= 1 and --seeds >= 1")
    arms = list(dict.fromkeys(parse_arm(s, pipeline) for s in strategies))
    out = ensure_output_dir(out_dir)
    write, _ = output_writer(out, plaintext)
    ds = open_dataset(data, progress=progress)
    if size is not None:
        size = tuple(int(v) for v in size)
        if len(size) == 1:  # one number: every spatial axis
            size = size * ds.ndim
        if len(size) != ds.ndim or min(size) < 1:
            raise DataError(data, f"size={size} does not fit {ds.ndim}D images",
                            f"pass {ds.ndim} positive numbers (or one for every axis)")
    if max_pool is not None and max_pool < 1:
        raise DataError(data, f"max_pool={max_pool}", "pass --max-pool >= 1")
    check_finetune(finetune)
    pretrain = any(a.pretrains(ds) for a in arms)
    shared = shared_representation(ds, out, max_pool=max_pool, size=size,
                                   config=pretrain_config_on(pretrain_config, ds),
                                   progress=progress, stream=stream) if pretrain else None
    refs = [Arm(FULL, "scratch")] + ([Arm(FULL_PRETRAINED, "pretrained")] if pretrain else [])
    ref_seeds = seed_list if reference_seeds is None else seed_list[:max(1, int(reference_seeds))]
    # (arm, seed, is it an all-labels reference)
    runs = [(a, k, a in refs) for k in seed_list for a in [*(refs if k in ref_seeds else []), *arms]]
    folders = [study_folder(out, unit_name(arm, ref), seed) for arm, seed, ref in runs]
    spec = UnitSpec(data=str(data), out=out, folders=tuple(folders), budget=budget, rounds=rounds, epochs=epochs,
                    train=dict(train or {}), cold_start=cold_start, mc_passes=mc_passes, max_pool=max_pool,
                    size=size, finetune=finetune, shared=shared, stream=stream,
                    semi_schedule=dict(semi_schedule or {}), self_train=self_train,
                    warm_start=check_warm_start(warm_start, ds.task))
    workers = max(1, min(int(workers), len(runs)))  # never more processes than units
    if workers > 1 and scoring not in (None, "memory", "shards"):
        raise DataError(data, f"workers={workers} with scoring={scoring!r}",
                        "pass workers=1 with a Dask scoring (its workers already run in parallel), or scoring "
                        "'memory' / 'shards' with several workers")
    results: list[UnitResult] = []
    if workers == 1:
        bar = tqdm(runs, desc=f"simulate {ds.name}", disable=not progress)
        with ExitStack() as stack:  # a Dask cluster (if asked) lives as long as the simulation
            client = scoring if scoring in (None, "memory", "shards") else stack.enter_context(dask_client(scoring))
            for arm, seed, ref in bar:
                bar.set_postfix(arm=unit_name(arm, ref), seed=seed)
                results.append(simulate_unit(spec, arm, seed, reference=ref, scoring=client, ds=ds))
    else:
        results = _run_units_in_processes(spec, runs, scoring, workers, progress, ds.name)
    parts = [r.curves for r in results]
    auto_parts = [r.autolabel for r in results if r.autolabel is not None]
    pool_size = results[-1].pool_size
    target_error = results[-1].target_error
    encrypted = any(r.encrypted for r in results)
    auto = pd.concat(auto_parts, ignore_index=True) if auto_parts else pd.DataFrame(columns=AUTOLABEL_COLUMNS)
    held_parts = [r.held_out for r in results if r.held_out is not None and len(r.held_out)]
    with output_lock(out):  # another run on this --out merges its rows one after the other, never over ours
        curves = merge_rows(out / "curves.csv", pd.concat(parts, ignore_index=True)[CURVE_COLUMNS], write=write)
        auto = merge_rows(out / "autolabel.csv", auto, write=write)
        held = (merge_rows(out / "held_out.csv", pd.concat(held_parts, ignore_index=True), write=write)
                if held_parts else None)
    summary = summarize(curves, budget)
    write(out / "summary.csv", summary.to_csv(index=False).encode())
    n_seeds = curves["seed"].nunique()  # the header describes every row of the merged tables, not only this run's
    plot_curves(curves, out / "curves.png", title=f"{ds.name}: active learning over {n_seeds} seed(s)", write=write)
    text = (f"{ds.name}: pool {pool_size} cases, budget {budget:.0%}, {rounds} rounds, {n_seeds} seed(s), "
            f"test split; full = all pool labels, same model and schedule")
    ours = {a.label: f"{a.label} ({a.strategy}, {a.pipeline})" for a in arms}  # an earlier run's arms: their label
    text += "; arms: " + ", ".join(ours.get(label, label) for label in summary["strategy"].unique())
    if pretrain:
        text += f"; pretrained representation (SimCLR on the pool, fine-tuning: {finetune})"
    if (curves["strategy"] == FULL_PRETRAINED).any():  # as summarize reads the references, whichever run made them
        text += f"; full = the stronger of {FULL} (scratch) and {FULL_PRETRAINED}"
    text += f"\n{format_table(summary, budget)}"
    if len(auto):
        text += "\n\n" + format_autolabel(summarize_autolabel(auto), target_error)
    if held is not None:
        text += "\n\n" + format_held_out(held, summary, budget, max(r.held_out_cases for r in results))
    write(out / "table.txt", (text + "\n").encode())
    print(text)
    if plaintext and encrypted:
        from medwb.privacy.outputs import warn_plaintext

        warn_plaintext("simulation", [out / f for f in OUTPUT_FILES if (out / f).is_file()], folders[-1])
    return summary


def unit_name(arm: Arm, reference: bool) -> str:
    """A unit's name in the curves and its study folder: the reference's own name, else the arm's label."""
    return arm.strategy if reference else arm.label


def study_folder(out: Path, name: str, seed: int) -> Path:
    """The study folder of one unit of a simulation writing to ``out``."""
    return out / "studies" / f"{name}-seed{seed}"


@dataclass(frozen=True)
class UnitSpec:
    """What every (arm, seed) unit of one simulation shares (picklable: it travels to worker processes)."""

    data: str
    out: Path
    folders: tuple[Path, ...]      # every study folder of the simulation (each registers them all for purge)
    budget: float
    rounds: int
    epochs: int | None
    train: dict[str, Any]
    cold_start: str
    mc_passes: int
    max_pool: int | None
    size: tuple[int, ...] | None
    finetune: str
    shared: PretrainResult | None  # the pretrained representation every pretraining arm starts from
    stream: bool
    semi_schedule: dict[str, float]  # FixMatch overrides (ActiveLearningLoop's semi_schedule)
    self_train: bool | None = None  # the medwb arms' rounds also train a self-trained student (None: the task's default)
    warm_start: WarmStart = "auto"  # the medwb arms' later rounds continue the last model (the loop's warm_start)


@dataclass
class UnitResult:
    """One unit's rows: its curve (or all-labels reference) and its auto-label rows, plus the pool facts."""

    curves: pd.DataFrame
    autolabel: pd.DataFrame | None
    held_out: pd.DataFrame | None  # the round models on the training cases a max_pool pool left out
    pool_size: int
    target_error: float
    encrypted: bool
    held_out_cases: int = 0  # how many held-out cases those rows were scored on (0: none scored here)


def simulate_unit(spec: UnitSpec, arm: Arm, seed: int, *, reference: bool, scoring: Any = None,
                  ds: Dataset | None = None) -> UnitResult:
    """One arm and seed of :func:`run_simulation`: its study folder, loop and rounds (or the all-labels reference
    when ``reference``); resumes a study a killed run left. ``scoring``: the loop's (a Dask client in-process)."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.data import open_dataset
    from medwb.models import default_train_config
    from medwb.store import Study

    ds = ds if ds is not None else open_dataset(spec.data, progress=False)
    name = unit_name(arm, reference)
    config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim,
                                  **{**spec.train, "epochs": spec.epochs})
    folder = study_folder(spec.out, name, seed)
    study = Study.open_or_create(folder, dataset_path=spec.data, task=ds.task, classes=ds.classes,
                                 name=f"{ds.name} {name} seed {seed}")
    try:
        register_simulation(study, spec.out, spec.folders, ds.stats_cache_file)
        loop = ActiveLearningLoop(study, ds, strategy="random" if reference else arm.strategy, batch_size=1,
                                  train_config=config, seed=seed, cold_start=spec.cold_start, mc_passes=spec.mc_passes,
                                  size=spec.size, evaluate_test=True, progress=False, max_pool=spec.max_pool,
                                  finetune=spec.finetune, pretrain=arm.pretrain, semi=arm.semi,
                                  pretrained=spec.shared if arm.pretrains(ds) else None,
                                  scoring=None if scoring == "memory" else scoring,
                                  stream=spec.stream and not reference,
                                  semi_schedule=spec.semi_schedule,
                                  self_train=spec.self_train if arm.pipeline == "medwb" and not reference else False,
                                  warm_start=spec.warm_start if arm.pipeline == "medwb" and not reference else None)
        pool_size, target = loop.pool_size, loop.autolabel_target_error
        if reference:
            ref, held_rows, n_held = _full_reference(loop, folder, seed, ds.task, name=name,
                                                     held_out=spec.max_pool is not None)
            return UnitResult(ref, None, held_rows, pool_size, target, study.encrypted, n_held)
        loop.batch_size = max(1, math.ceil(spec.budget * pool_size / spec.rounds))
        loop.run(spec.rounds, simulated_oracle(ds))
        held = held_out_arrays(loop) if spec.max_pool is not None else None
        return UnitResult(curves_from_study(study, strategy=name, seed=seed, pool_size=pool_size, task=ds.task),
                          autolabel_from_study(study, strategy=name, seed=seed),
                          None if held is None else held_out_curves(loop, held, strategy=name, seed=seed),
                          pool_size, target, study.encrypted, 0 if held is None else len(held[1]))
    finally:
        study.close()  # a worker process runs many units: one sqlite connection each otherwise


def _one_thread() -> None:
    """A worker process's initializer: one intra-op thread (two single-thread processes beat one two-thread one)."""
    import torch

    torch.set_num_threads(1)


def _unit_cost(arm: Arm, reference: bool) -> int:
    """Rough order of a unit's cost, to start the longest first: FixMatch arms, then references, then the rest."""
    return 1 if reference else (0 if arm.pipeline in ("medwb", "semi") else 2)


def _run_units_in_processes(spec: UnitSpec, runs: Sequence[tuple[Arm, int, bool]], scoring: str | None,
                            workers: int, progress: bool, name: str) -> list[UnitResult]:
    """``runs`` in ``workers`` spawned processes (longest first); results in the order of ``runs``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    order = sorted(range(len(runs)), key=lambda i: (_unit_cost(runs[i][0], runs[i][2]), i))
    results: dict[int, UnitResult] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_one_thread) as pool:
        futures = {pool.submit(simulate_unit, spec, runs[i][0], runs[i][1], reference=runs[i][2],
                               scoring=scoring): i for i in order}
        for f in tqdm(as_completed(futures), total=len(futures), desc=f"simulate {name} ({workers} processes)",
                      disable=not progress):
            results[futures[f]] = f.result()
    return [results[i] for i in range(len(runs))]


#: what a simulation writes in its output folder (besides the studies and the shared cache)
OUTPUT_FILES = ("curves.csv", "summary.csv", "curves.png", "table.txt", "autolabel.csv", "held_out.csv")


def register_simulation(study: Study, out: Path, folders: Sequence[Path], stats_cache: Path) -> None:
    """Record in ``study`` every file of the simulation outside its folder: the outputs, the sibling studies, the
    shared pretraining cache and the dataset's statistics cache (a purge of any study removes them all)."""
    from medwb.store.layout import StudyLayout

    study.register_artifacts([out / f for f in OUTPUT_FILES], "simulation")
    study.register_artifacts(folders, "study")
    study.register_artifacts([StudyLayout(out).cache, stats_cache], "derived")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on the output folder (``OUT/.simulate.lock``, flock: released by the kernel when its
    process dies, so a killed run never leaves a stale lock)."""
    with exclusive_lock(out / ".simulate.lock") as fd:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for a person looking at a waiting run
        yield


def merge_rows(path: Path, new: pd.DataFrame, *, write: Writer = files.write_bytes) -> pd.DataFrame:
    """``new`` plus the rows of ``path`` for every (strategy, seed) that ``new`` does not have (another run on the
    same output folder wrote them), written atomically; returns what was written. Call under :func:`output_lock`."""
    old = (pd.read_csv(io.BytesIO(files.read_bytes(path))) if path.is_file() and path.stat().st_size
           else pd.DataFrame(columns=new.columns))
    if len(old) and {"strategy", "seed"} <= set(old.columns):
        ours = set(zip(new["strategy"].astype(str), new["seed"].astype(int)))
        keep = [(str(a), int(b)) not in ours for a, b in zip(old["strategy"], old["seed"])]
        old = old[keep]
    merged = pd.concat([d for d in (old, new) if len(d)], ignore_index=True) if len(old) or len(new) else new
    merged = merged.reindex(columns=new.columns) if len(merged) else new
    buf = io.StringIO()
    merged.to_csv(buf, index=False)
    write(path, buf.getvalue().encode())
    return merged


def output_writer(out: Path, plaintext: bool) -> tuple[Writer, Key | None]:
    """How tables are written under ``out`` and the configured medwb key: with a key (and not ``plaintext``)
    ``out`` becomes an encrypted zone (:func:`protect_output`) and the store's file pair encrypts; otherwise
    plain atomic writes. The key is returned for callers that keep other work private too (class sweeps)."""
    key = cipher.key_for_new_study(None)
    if key is not None and not plaintext:
        protect_output(out, key)
    return (atomic_write_bytes if plaintext else files.write_bytes), key


def shared_representation(ds: Dataset, out: Path, *, max_pool: int | None, size: tuple[int, ...] | None,
                          config: PretrainConfig | None, progress: bool, stream: bool = False) -> PretrainResult:
    """One pretraining of the simulation's pool (the splits every study carves: a pure function of the cohort),
    at the loops' input size with the dataset's default network, cached under ``out`` (streamed: the same key)."""
    from medwb.al.representation import pretrain_build_args, pretrained_representation
    from medwb.data.dataset import default_size
    from medwb.data.splits import PoolInputs, carve_splits
    from medwb.models.networks import build_for_dataset

    splits = carve_splits(ds.cohort, max_pool=max_pool, name=ds.name)
    X = PoolInputs(ds, splits, tuple(size) if size is not None else default_size(ds), stream=stream).images()
    args = pretrain_build_args(lambda s: build_for_dataset(ds, seed=s), config)
    return pretrained_representation(out, X, build_args=args, config=config, progress=progress)


def _full_reference(loop: ActiveLearningLoop, folder: Path, seed: int, task: str, name: str = FULL, *,
                    held_out: bool = False) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """Train on every pool label once per seed (cached in the study folder as full.json): its curve row and, with
    ``held_out``, its row on :func:`held_out_arrays` (None when there are none, or for a cache written before)
    and how many cases this call scored there (0 when it read the cache)."""
    from medwb.models import evaluate

    cache, n_held = folder / "full.json", 0
    if cache.is_file():
        metrics = json.loads(files.read_bytes(cache))
    else:
        X, y, _ = loop.arrays("train")
        model, metrics = loop.fit(X, y)
        held = held_out_arrays(loop) if held_out else None
        if held is not None:
            metrics.update({f"held_out_{k}": v for k, v in evaluate(model, *held).items()})
            n_held = len(held[1])
        # atomic (two runs on one --out may both train this reference); encrypted in an encrypted study
        files.write_bytes(cache, json.dumps(metrics).encode())
    n = loop.pool_size

    def rows(prefix: str) -> pd.DataFrame:
        return pd.DataFrame([(name, seed, 0, n, 1.0, m, metric_value(metrics.get(f"{prefix}_{m}")))
                             for m in metrics_for(task)], columns=CURVE_COLUMNS)

    has_held = held_out and any(f"held_out_{m}" in metrics for m in metrics_for(task))
    return rows("test"), rows("held_out") if has_held else None, n_held
