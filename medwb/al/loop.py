"""The active-learning loop: score the pool -> select a batch -> pre-label -> collect labels -> retrain.

The loop keeps **no state of its own**: the splits, rounds with their selected cases, labels with provenance and
models with metrics live in the study store, weights in ``study/models/``. A process killed at any point restarts
at the right place: an unstarted round is selected again (same seed, same batch), a half-labelled round asks only
for the remaining cases, a labelled round without a model is retrained, a finished round is never repeated.

One round is three calls so a review widget can sit in the middle (``propose`` -> labels via ``save_label`` ->
``complete``); ``run_round`` chains them with an oracle (:mod:`medwb.al.oracle`). Splits: :mod:`medwb.data.splits`;
model outputs for the strategies: :mod:`medwb.al.scoring`; pre-labels: :mod:`medwb.al.autolabel` and
:mod:`medwb.al.prelabels` (segmentation masks and uncertainty maps at the image's own size).

How a round trains (:class:`ActiveLearningLoop`'s options; the recipe itself is :mod:`medwb.al.fit`): the
unlabelled pool is put to work by default. ``pretrain`` (``None``: not for 2D segmentation,
:func:`~medwb.al.representation.uses_pretraining`; or a ``pretrained`` result / weights file) runs SimCLR on the
pool once (``pretrain_config``; cached in the study), ranks the cold start in that embedding and starts every
round from the pretrained trunk (``finetune`` "full" or "head"); ``semi`` (:func:`~medwb.al.fit.uses_semi`) trains
FixMatch (masks: a mean teacher) on the labels plus the rest of the pool, pseudo-labels never stored;
``semi_schedule``: its settings beyond ``train_config`` (SemiConfig / SemiSegConfig fields). ``pretrain=False,
semi=False``: the plain baseline. ``self_train``: :func:`~medwb.al.fit.uses_self_training`. ``warm_start``
(PASSES, "auto", the default, or None: off): rounds after the first continue the last round's model, by default
only those of 512 labels or more in 2D classification (:func:`~medwb.al.fit.continued_passes`,
:func:`~medwb.al.fit.fit_continued`); the all-labels reference never.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.al.acquire import check_strategy
from medwb.al.fit import WarmStart, check_semi_schedule, check_warm_start, fixmatch_still_ahead, uses_self_training, uses_semi
from medwb.al.representation import (check_finetune, pretrain_build_args, pretrained_embeddings,
                                     pretrained_representation, uses_pretraining)
from medwb.al.scoring import first_batch_strategy
from medwb.al.oracle import LabelAnswer, Oracle, label_targets, record_label
from medwb.al.prelabels import check_prelabel, prelabel_round
from medwb.al.structure_round import STRATEGY as STRUCTURE
from medwb.al.structure_round import structure_prelabels
from medwb.data.dataset import default_size
from medwb.data.splits import PoolInputs, carve_splits
from medwb.errors import StoreError
from medwb.store.pool import load_splits, save_splits

if TYPE_CHECKING:
    from distributed import Client
    from torch import nn

    from medwb.data.case_images import Images
    from medwb.data.dataset import Dataset
    from medwb.models import TrainConfig
    from medwb.models.pretrain import PretrainConfig, PretrainResult
    from medwb.store import Study


def study_splits(study: Study, dataset: Dataset, *, pool_ids: Iterable[str] | None = None,
                 max_pool: int | None = None) -> dict[str, list[str]]:
    """The study's saved splits; a new study gets the dataset's cases added and its splits carved by
    :func:`medwb.data.splits.carve_splits` and saved, so a restart, a report and explain see the same."""
    known = set(study.case_ids())
    if not set(dataset.cohort["case_id"].astype(str)) <= known:
        study.add_cases(dataset.cohort)
    splits = load_splits(study)
    if splits is None:
        splits = carve_splits(dataset.cohort, pool_ids=pool_ids, max_pool=max_pool, name=dataset.name)
        save_splits(study, splits)
    return splits


def scoring_name(scoring: str | Client | None) -> str:
    """How a round scored its pool, for the round's parameters: "memory", "shards", "local" (a LocalCluster on
    this machine, also when its Client is passed) or "dask <scheduler address>"."""
    if scoring is None:
        return "memory"
    if isinstance(scoring, str):
        return scoring if scoring in ("shards", "local") else f"dask {scoring}"
    from distributed import LocalCluster

    if isinstance(getattr(scoring, "cluster", None), LocalCluster):
        return "local"
    return f"dask {scoring.scheduler.address}"


def is_structure(open_round: pd.Series | None) -> bool:
    """Whether the open round is a structure round: its pre-labels are the namings', no model's."""
    return open_round is not None and open_round["strategy"] == STRUCTURE


@dataclass
class RoundResult:
    """What one finished round produced (also recorded in the store)."""

    round: int
    strategy: str
    selected: list[str]
    n_labeled: int
    metrics: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None


class ActiveLearningLoop:
    """Pool-based active learning on a study (baal-like, but the state lives in the store).

    ``model_fn(seed) -> torch.nn.Module`` builds each round's network. The splits are the study's saved ones; a
    new study gets them carved by :func:`medwb.data.splits.carve_splits` (pool = ``train``, or ``pool_ids``; ``max_pool`` a fixed
    seeded subset) and saved. ``val`` serves early stopping and auto-label calibration; ``test`` is evaluated
    only with ``evaluate_test``. The first batch, when no model exists yet, comes from the label-free
    ``cold_start`` strategy (``"auto"``: the rule of ``first_batch_strategy``); random stays random throughout.

    How a round trains (``pretrain``, ``pretrained``, ``pretrain_config``, ``finetune``, ``semi``,
    ``semi_schedule``, ``self_train``, ``warm_start``): see the module's docstring.

    ``scoring``: where a round's model scores the pool: None, the loop's arrays; ``"shards"``, shard by shard from
    the files; ``"local"``, a scheduler address or a ``distributed.Client``: Dask tasks (:mod:`medwb.compute`).
    ``stream``: the pool is never held in memory (a pool larger than RAM): its cases are read from the files when
    a step needs them (the labelled set, a batch, pretraining and FixMatch batch by batch, the cold start's
    embeddings), and the pool is scored shard by shard (``scoring`` "shards" unless given).
    ``prelabel`` ("ellipse" or "vessels", 2D segmentation): before any model, each proposed case gets that
    label-free pre-label mask (:func:`medwb.al.prelabels.label_free_mask`, stored as the round's predicted mask,
    producer "structure:<kind>").
    """

    def __init__(
        self, study: Study, dataset: Dataset, *, strategy: str = "hybrid", batch_size: int = 32,
        model_fn: Callable[[int], nn.Module] | None = None, train_config: TrainConfig | None = None, seed: int = 0,
        cold_start: str = "auto", mc_passes: int = 20, size: tuple[int, ...] | None = None,
        evaluate_test: bool = False, auto_accept: bool = False, autolabel_target_error: float = 0.02,
        progress: bool = True, pool_ids: Iterable[str] | None = None, max_pool: int | None = None,
        voxel_reduce: str = "topk", pretrain: bool | None = None, pretrain_config: PretrainConfig | None = None,
        pretrained: PretrainResult | str | Path | None = None, finetune: str = "full", semi: bool | None = None,
        scoring: str | Client | None = None, stream: bool = False, prelabel: str | None = None,
        semi_schedule: Mapping[str, float] | None = None, self_train: bool | None = None, warm_start: WarmStart = "auto",
    ) -> None:
        check_strategy(strategy)
        if batch_size < 1:
            raise StoreError(f"batch_size must be >= 1, got {batch_size}. Fix: pass a positive batch size")
        if study.task != dataset.task:
            raise StoreError(f"the study is a {study.task} study but the dataset is {dataset.task}. "
                             "Fix: open the study made for this dataset")
        from medwb.models import default_train_config
        from medwb.models.networks import build_for_dataset, num_classes_of

        self.study, self.ds = study, dataset
        self.strategy, self.cold_start = strategy, first_batch_strategy(cold_start, dataset.task, dataset.ndim)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.mc_passes, self.evaluate_test = int(mc_passes), evaluate_test
        self.auto_accept, self.autolabel_target_error = auto_accept, autolabel_target_error
        self.progress, self.voxel_reduce = progress, voxel_reduce
        self.scoring = "shards" if stream and scoring is None else scoring  # a streamed pool is scored from files
        self.num_classes = num_classes_of(dataset)
        self.size = tuple(size) if size is not None else default_size(dataset)
        self.model_fn = model_fn or partial(build_for_dataset, dataset)
        self.train_config = train_config or default_train_config(dataset.task, seed=self.seed, modality=dataset.modality,
                                                                 spatial_dims=dataset.ndim)
        self.autolabel_stats: dict[str, float] = {}  # of the last proposed batch, for the round's metrics
        self._model: nn.Module | None = None  # the last registered model, loaded once (current_model)
        self._model_version: str | None = None
        self.pretrain, self._pretrained = pretrained is not None or uses_pretraining(dataset.task, dataset.ndim, pretrain), pretrained
        self.pretrain_config, self.finetune = pretrain_config, check_finetune(finetune)
        self.semi = uses_semi(dataset.task, dataset.ndim, semi)
        self.semi_schedule = check_semi_schedule(self.train_config, semi_schedule, dataset.task)
        self.self_train = uses_self_training(dataset.task, self_train, stream)
        self.warm_start = check_warm_start(warm_start, dataset.task)
        self.prelabel = None if prelabel is None else check_prelabel(prelabel, dataset)
        self.data = PoolInputs(dataset, study_splits(study, dataset, pool_ids=pool_ids, max_pool=max_pool), self.size,
                               stream=stream)

    # ------------------------------------------------------------------ state, read from the store
    def split_ids(self) -> dict[str, list[str]]:
        """Case ids of the pool (train), val and test: the study's saved splits."""
        return {k: list(v) for k, v in self.data.splits.items()}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(X, y, case_ids) of a split at the loop's size (:class:`medwb.data.splits.PoolInputs`; with ``stream``
        the pool's whole arrays are read only when asked for here: the loop itself reads its cases as needed)."""
        return self.data[split]

    pool_size = property(lambda self: len(self.data.pool_ids()), doc="Number of pool (train split) cases.")

    @property
    def round(self) -> int | None:
        """Number of the open (started, unfinished) round in the store; None when every round is finished."""
        return None if (open_ := self._open_round()) is None else int(open_["number"])

    def labeled(self) -> pd.DataFrame:
        """Current label of each labelled pool case, contested reads left out (the store: the only truth)."""
        lab = self.study.agreed_labels()
        pool = set(self.data.pool_ids())
        return lab[lab["case_id"].astype(str).isin(pool)].reset_index(drop=True)

    def labelled_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(case_ids, X, targets) of the labelled pool cases, targets read from the store's labels."""
        lab = self.labeled()
        ids = list(lab["case_id"].astype(str))
        spatial = self.data.spatial_size() if self.ds.task == "segmentation" else ()
        return ids, self.data.rows(ids), label_targets(lab, self.ds.task, spatial)

    def finished_rounds(self) -> int:
        return int(self.study.last_finished_round())

    def _open_round(self) -> pd.Series | None:
        r = self.study.rounds()
        open_ = r[r["status"] != "finished"] if len(r) else r
        return None if len(open_) == 0 else open_.iloc[-1]

    def checkpoint_path(self, number: int) -> Path:
        return Path(self.study.folder) / "models" / f"round_{number:03d}.pt"

    def current_model(self) -> tuple[nn.Module | None, str | None]:
        """(model, version) of the last registered model, loaded from its checkpoint; (None, None) before any."""
        from medwb.models import load_checkpoint

        models = self.study.models()
        if len(models) == 0:
            return None, None
        last = models.iloc[-1]
        if self._model_version != last["version"]:
            self._model, _ = load_checkpoint(last["checkpoint_path"])
            self._model_version = str(last["version"])
        return self._model, self._model_version

    # ------------------------------------------------------------------ score -> select
    def _select(self, number: int) -> tuple[list[str], np.ndarray, str, dict[str, Any]]:
        """Choose the next batch among the unlabelled pool cases (seeded by seed and round number)."""
        from medwb.al.acquire import select
        from medwb.al.scoring import selection_inputs, sharded_pool_inputs

        ids = self.data.pool_ids()
        done = set(self.labeled()["case_id"].astype(str))
        unl = np.array([i for i, c in enumerate(ids) if c not in done], dtype=int)
        lab = np.array([i for i, c in enumerate(ids) if c in done], dtype=int)
        if len(unl) == 0:
            raise StoreError("every pool case is labelled. Fix: stop the loop; there is nothing left to select")
        k = min(self.batch_size, len(unl))
        rs = self.seed * 1000 + number
        model, version = self.current_model()
        rep = self.representation() if model is None and self.pretrain else None
        if model is not None and self.scoring is not None and self.strategy != "random":
            name, kw = self.strategy, sharded_pool_inputs(
                model, self.ds, [ids[i] for i in unl], [ids[i] for i in lab], strategy=self.strategy, seed=rs,
                passes=self.mc_passes, size=self.size, client=None if self.scoring == "shards" else self.scoring,
                voxel_reduce=self.voxel_reduce, progress=self.progress)
        else:
            name, kw = selection_inputs(model, self.data.images([ids[i] for i in unl]),
                                        self.data.images([ids[i] for i in lab]), strategy=self.strategy,
                                        cold_start=self.cold_start,
                                        task=self.ds.task, passes=self.mc_passes, seed=rs,
                                        voxel_reduce=self.voxel_reduce, representation=None if rep is None else
                                        partial(pretrained_embeddings, self.model_fn, self.seed, rep))
        idx, scores = select(name, k, random_state=rs, **kw)
        idx, scores = np.asarray(idx, dtype=int), np.asarray(scores, dtype=float)
        if len(scores) == len(unl):  # a score per pool case: keep those of the selected ones
            scores = scores[idx]
        params = {"k": k, "seed": self.seed, "random_state": rs, "mc_passes": self.mc_passes,
                  "requested_strategy": self.strategy, "voxel_reduce": self.voxel_reduce, "model_version": version,
                  "pool_size": len(ids), "n_labeled_before": len(lab), "scoring": scoring_name(self.scoring)}
        params.update(pretrained=self.pretrain, semi=self.semi, self_train=self.self_train, warm_start=self.warm_start)
        if self.pretrain:
            params["finetune"] = self.finetune
        return [ids[i] for i in unl[idx]], scores, name, params

    # ------------------------------------------------------------------ round API
    def propose(self) -> pd.DataFrame:
        """Start the next round (or reopen the unfinished one); return its cases still waiting for a label.

        Columns: case_id, score, prelabel (class, classification only), confidence (calibrated), auto (True
        when confident enough to be auto-accepted at the target error).
        """
        open_ = self._open_round()
        if open_ is None:
            number = self.finished_rounds() + 1
            t0 = time.perf_counter()
            selected, scores, name, params = self._select(number)
            params["select_seconds"] = round(time.perf_counter() - t0, 3)  # scoring the pool + the strategy
            self.study.start_round(number, name, params, selected, scores)
            score_of = dict(zip(selected, scores))
        else:
            number = int(open_["number"])
            selected = [str(c) for c in open_["selected_ids"]]
            score_of = dict(zip(selected, open_["scores"] or [float("nan")] * len(selected)))
        labelled = set(self.study.labels(latest=True)["case_id"].astype(str))  # by the loop, a widget, an import
        todo = [c for c in selected if c not in labelled]
        batch = pd.DataFrame({"case_id": todo, "score": [float(score_of[c]) for c in todo]})
        return structure_prelabels(self.study, batch) if is_structure(open_) else self._prelabel(batch)

    def _prelabel(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Pre-label the batch and store it for readers' pages (:func:`medwb.al.prelabels.prelabel_round`)."""
        return prelabel_round(self, batch)

    def save_label(self, case_id: str, answer: LabelAnswer) -> int:
        """Record one label of the open round (one transaction in the store); returns the label id."""
        number = self.round
        if number is None:
            raise StoreError("no open round. Fix: call propose() before saving labels")
        return record_label(self.study, case_id, answer, round=number, model_version=self.current_model()[1])

    def commit_auto(self, batch: pd.DataFrame) -> pd.DataFrame:
        """With ``auto_accept``: store the batch's confident pre-labels as ``auto`` labels (no person involved,
        annotator ``model:<version>``) and return the rows that still need a person."""
        if not self.auto_accept or len(batch) == 0 or not batch["auto"].any():
            return batch
        from medwb.al.prelabels import prelabel_mask

        auto_by = f"model:{self.current_model()[1]}"
        for row in batch[batch["auto"]].itertuples(index=False):
            cid = str(row.case_id)
            self.save_label(cid, LabelAnswer(value=int(row.prelabel), source="auto", annotator=auto_by)
                            if self.ds.task == "classification" else
                            LabelAnswer(mask=prelabel_mask(self, cid), source="auto", annotator=auto_by))
        return batch[~batch["auto"]].reset_index(drop=True)

    def complete(self) -> RoundResult:
        """Retrain on every label in the store, checkpoint, register the model and close the round."""
        from medwb.al.autolabel import autolabel_outcome
        from medwb.models import save_checkpoint

        open_ = self._open_round()
        if open_ is None:
            raise StoreError("no open round to complete. Fix: call propose() first")
        number = int(open_["number"])
        self.study.check_round_decided(number)  # double reads finished and agreed or adjudicated
        models = self.study.models()
        mine = models[models["round"] == number] if len(models) else models
        if len(mine):  # killed after the model was registered: only closing the round is missing
            metrics, version = dict(mine.iloc[-1]["metrics"]), str(mine.iloc[-1]["version"])
        else:
            if len(self.labeled()) == 0:
                raise StoreError("no labelled pool case to train on. Fix: save at least one label in the round")
            rest = self.unlabelled_arrays()
            previous = self.current_model()[0] if self.warm_start else None  # fit_round decides whether to continue
            model, metrics = self.fit(*self.labelled_arrays()[1:], X_unlabelled=rest[0], previous=previous)
            metrics.update(self.autolabel_stats)
            if self.evaluate_test and self.ds.task == "classification":  # auto-labels on the rest and on test
                metrics.update(autolabel_outcome(model, *self.arrays("val")[:2], {
                    "pool": rest, "test": self.arrays("test")[:2]}, target_error=self.autolabel_target_error,
                    seed=self.seed))
            # size: the spatial size of the arrays the network was trained on, and splits: the case ids, so that
            # a report or an explanation scores the same cases on the same grid from the checkpoint alone
            size = list(self.data.spatial_size())
            meta = {"round": number, "seed": self.seed, "metrics": metrics, "size": size, "splits": self.split_ids()}
            path = save_checkpoint(model, self.checkpoint_path(number), meta)
            version = self.study.add_model(number, path, metrics)
            self._model, self._model_version = model, version
        self.study.finish_round(number)
        return RoundResult(number, str(open_["strategy"]), [str(c) for c in open_["selected_ids"]],
                           int(metrics.get("n_labeled", len(self.labeled()))), metrics, version)

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray, y: np.ndarray, X_unlabelled: Images | None = None,
            previous: nn.Module | None = None) -> tuple[nn.Module, dict[str, float]]:
        """One training run with the loop's model, schedule and pipeline (:func:`medwb.al.fit.fit_round`; also
        the all-labels reference): from the pretrained trunk with ``pretrain``, FixMatch on ``X_unlabelled`` too
        with ``semi``; ``previous``: the last model, continued when ``warm_start`` and the round allow it
        (:func:`~medwb.al.fit.continued_passes`). Metrics: n_labeled, best_epoch,
        train_seconds, semi, val_* and (``evaluate_test``) test_*."""
        from medwb.al.fit import fit_round

        return fit_round(self.model_fn(self.seed), X, y, self.arrays("val")[:2], task=self.ds.task, config=self.train_config,
                         pretrained=self.representation() if self.pretrain else None, finetune=self.finetune,
                         semi=self.semi and fixmatch_still_ahead(self.study), X_unlabelled=X_unlabelled,
                         semi_schedule=self.semi_schedule, self_train=self.self_train,
                         test=self.arrays("test")[:2] if self.evaluate_test else None, progress=self.progress,
                         previous=previous, warm_passes=self.warm_start)

    def unlabelled_arrays(self) -> tuple[Images, np.ndarray]:
        """(X, y) of the pool cases without a label in the store (FixMatch's unlabelled set, streamed with
        ``stream``; y, the ground truth, for simulations)."""
        done = set(self.labeled()["case_id"].astype(str))
        rest = [c for c in self.data.pool_ids() if c not in done]
        return self.data.images(rest), self.data.truth(rest)

    def representation(self) -> PretrainResult | str | Path | None:
        """The pretrained trunk the rounds start from (None without ``pretrain``): on first need pretrained on the
        pool and cached in the study (:func:`medwb.al.representation.pretrained_representation`)."""
        if self.pretrain and self._pretrained is None:
            self._pretrained = pretrained_representation(
                self.study, self.data.images(), config=self.pretrain_config, progress=self.progress,
                build_args=pretrain_build_args(self.model_fn, self.pretrain_config))
        return self._pretrained

    # ------------------------------------------------------------------ whole rounds
    def run_round(self, oracle: Oracle) -> RoundResult:
        """One full round: propose, auto-accept (if enabled), ask the oracle for each remaining case, retrain."""
        batch = self.commit_auto(self.propose())
        for row in batch.itertuples(index=False):
            pre = None if pd.isna(row.prelabel) else {"value": int(row.prelabel), "confidence": row.confidence}
            ans = oracle(str(row.case_id), pre)
            if ans is not None:
                self.save_label(str(row.case_id), ans)
        return self.complete()

    def run(self, rounds: int, oracle: Oracle) -> list[RoundResult]:
        """Run until the study holds ``rounds`` finished rounds (a resumed study only does the rest)."""
        from tqdm.auto import tqdm

        out = []
        todo = max(0, int(rounds) - self.finished_rounds())
        for _ in tqdm(range(todo), desc=f"active learning ({self.strategy})", disable=not self.progress):
            out.append(self.run_round(oracle))
        return out
