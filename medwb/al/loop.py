"""The active-learning loop: score the pool -> select a batch -> pre-label -> collect labels -> retrain.

Why it looks like this: the loop keeps **no state of its own**. Everything it needs to continue lives in the
study store (rounds with their selected cases, labels with provenance, models with metrics) and in the
checkpoints under ``study/models/``. A process killed at any point therefore restarts at the right place:

* a round that was never started is selected again (same seed -> same batch);
* a round whose labels were partly saved asks only for the remaining cases;
* a round whose labels are complete but whose model is missing is retrained;
* a finished round is never repeated.

One round is split into three calls so the notebook's review widget can sit in the middle
(:meth:`ActiveLearningLoop.propose` -> the human labels cases with :meth:`ActiveLearningLoop.save_label` ->
:meth:`ActiveLearningLoop.complete`); :meth:`ActiveLearningLoop.run_round` chains them with an oracle callable
(a simulated annotator from ground truth, or anything that answers for one case at a time).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from medwb.errors import DataError, StoreError

#: strategies that use embeddings (the others skip the extra trunk pass over the pool).
NEEDS_EMBEDDINGS = frozenset({"coreset", "badge", "hybrid", "cold_start"})


@dataclass
class LabelAnswer:
    """One annotator's answer for one case (what the store records, plus provenance).

    Segmentation answers carry either a ``mask`` array (the loop saves it into the study's ``masks/``) or the
    path of a mask file already written (e.g. a NIfTI edited in 3D Slicer / ITK-SNAP).
    """

    value: int | None = None  # class index (classification)
    mask: np.ndarray | None = None  # label mask (segmentation), spatial shape of the image
    mask_path: str | None = None  # or an existing mask file
    source: str = "human"  # "human" | "auto" | "corrected"
    annotator: str = "annotator"
    seconds: float | None = None


class Oracle(Protocol):
    """Anything that labels one proposed case: ``oracle(case_id, prelabel) -> LabelAnswer | None`` (None = skip)."""

    def __call__(self, case_id: str, prelabel: dict[str, Any] | None) -> LabelAnswer | None: ...


def simulated_oracle(dataset: Any, *, annotator: str = "simulated-oracle") -> Oracle:
    """An annotator that answers with the dataset's ground truth (simulation, tests, notebook under papermill).

    Provenance is what a person would produce: ``corrected`` when a class pre-label was shown and was wrong,
    ``human`` otherwise (accepting a right pre-label is still a human decision).
    """
    labels = dataset.cohort.set_index("case_id")["label"]

    def answer(case_id: str, prelabel: dict[str, Any] | None) -> LabelAnswer:
        cid = str(case_id)
        if dataset.task == "classification":
            y = labels.get(cid, pd.NA)
            if pd.isna(y):
                raise DataError(dataset.name, f"case {cid} has no ground-truth label for the simulated oracle",
                                "simulate only on splits that carry labels (train/val/test)")
            value = int(y)
            pre = None if prelabel is None else prelabel.get("value")
            source = "corrected" if pre is not None and int(pre) != value else "human"
            return LabelAnswer(value=value, source=source, annotator=annotator, seconds=0.0)
        mask = dataset.load_mask(cid)
        if mask is None:
            raise DataError(dataset.name, f"case {cid} has no ground-truth mask for the simulated oracle",
                            "simulate only on cases that have a mask")
        return LabelAnswer(mask=np.asarray(mask)[0], source="human", annotator=annotator, seconds=0.0)

    return answer


# ---------------------------------------------------------------------------------------------- loop
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

    ``model_fn(seed) -> torch.nn.Module`` builds a fresh network each round: retraining from scratch avoids the
    warm-start bias of fine-tuning on a growing set. The pool is the dataset's ``train`` split (or ``pool_ids``);
    ``val`` serves early stopping and auto-label calibration; ``test`` is evaluated only with ``evaluate_test``
    (see :meth:`split_ids` for datasets without val/test; ``max_pool`` takes a fixed seeded subset of the pool).
    The first batch, when no model exists yet, comes from the label-free ``cold_start`` strategy on pixel
    features (the random strategy stays random throughout, as the honest baseline).
    """

    def __init__(
        self,
        study: Any,
        dataset: Any,
        *,
        strategy: str = "hybrid",
        batch_size: int = 32,
        model_fn: Callable[[int], Any] | None = None,
        train_config: Any = None,
        seed: int = 0,
        cold_start: str = "cold_start",
        mc_passes: int = 20,
        size: tuple[int, ...] | None = None,
        evaluate_test: bool = False,
        auto_accept: bool = False,
        autolabel_target_error: float = 0.02,
        progress: bool = True,
        pool_ids: Iterable[str] | None = None,
        max_pool: int | None = None,
        voxel_reduce: str = "topk",
    ) -> None:
        from medwb.al.acquire import STRATEGIES

        for name in (strategy, cold_start):
            if name not in STRATEGIES:
                raise StoreError(f"unknown acquisition strategy {name!r}. Fix: use one of {sorted(STRATEGIES)}")
        if batch_size < 1:
            raise StoreError(f"batch_size must be >= 1, got {batch_size}. Fix: pass a positive batch size")
        if study.task != dataset.task:
            raise StoreError(f"the study is a {study.task} study but the dataset is {dataset.task}. "
                             "Fix: open the study made for this dataset")
        self.study, self.ds = study, dataset
        self.strategy, self.cold_start = strategy, cold_start
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.mc_passes, self.evaluate_test = int(mc_passes), evaluate_test
        self.auto_accept, self.autolabel_target_error = auto_accept, autolabel_target_error
        self.progress = progress
        self.num_classes = max(2, max(int(k) for k in dataset.classes) + 1)
        self.size = tuple(size) if size is not None else default_size(dataset)
        self.model_fn = model_fn or self._default_model_fn
        self.train_config = train_config or self._default_config()
        self.round: int | None = None
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._model: Any = None
        self._model_version: str | None = None
        self._pool_ids = None if pool_ids is None else {str(c) for c in pool_ids}
        self.max_pool = max_pool
        self.voxel_reduce = voxel_reduce
        known = set(study.cases()["case_id"].astype(str)) if len(study.cases()) else set()
        if not set(dataset.cohort["case_id"].astype(str)) <= known:
            study.add_cases(dataset.cohort)

    # ------------------------------------------------------------------ building blocks
    def _default_model_fn(self, seed: int) -> Any:
        from medwb.models import build_classifier, build_segmenter

        c = int(self.ds.cohort["channels"].dropna().iloc[0]) if "channels" in self.ds.cohort else 1
        build = build_classifier if self.ds.task == "classification" else build_segmenter
        return build(self.ds.ndim, c, self.num_classes, seed=seed)

    def _default_config(self) -> Any:
        from medwb.models import default_train_config

        return default_train_config(self.ds.task, seed=self.seed)

    def split_ids(self) -> dict[str, list[str]]:
        """Case ids of the pool (train), val and test. Datasets without a val/test split (MSD, image folders)
        get them carved from the labelled train cases with a fixed seed (15% val, 20% test), the same for
        every AL seed, so all strategies are judged on one test set."""
        if not hasattr(self, "_split_ids"):
            c = self.ds.cohort
            ids = {s: [str(i) for i in c.loc[c["split"] == s, "case_id"]] for s in ("train", "val", "test")}
            if not ids["val"] or not ids["test"]:
                order = list(np.random.default_rng(20240601).permutation(ids["train"]))
                n = len(order)
                n_test = 0 if ids["test"] else max(1, round(0.20 * n))
                n_val = 0 if ids["val"] else max(1, round(0.15 * n))
                ids["test"] = ids["test"] or sorted(order[:n_test])
                ids["val"] = ids["val"] or sorted(order[n_test:n_test + n_val])
                ids["train"] = [i for i in ids["train"] if i not in set(order[:n_test + n_val])]
            if self._pool_ids is not None:
                ids["train"] = [i for i in ids["train"] if i in self._pool_ids]
            if self.max_pool is not None and len(ids["train"]) > self.max_pool:  # same subset for every AL seed
                keep = set(np.random.default_rng(12345).choice(ids["train"], self.max_pool, replace=False).tolist())
                ids["train"] = [i for i in ids["train"] if i in keep]
            for s, v in ids.items():
                if not v:
                    raise DataError(self.ds.name, f"the {s!r} split is empty",
                                    "give the dataset labelled train cases (cohort column 'split')")
            self._split_ids = ids
        return self._split_ids

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(X, y, case_ids) of a split at the loop's size, cached. y is ground truth: the loop uses it only for
        evaluation (val/test) and the all-labels reference; training reads labels from the store."""
        if split not in self._arrays:
            want = self.split_ids()[split]
            src = {str(s) for s in self.ds.cohort.set_index("case_id").loc[want, "split"]}
            Xs, ys, idss = [], [], []
            for s in sorted(src):
                key = f"_dataset_{s}"
                if key not in self._arrays:
                    X, y, ids = self.ds.arrays(s, size=self.size)
                    self._arrays[key] = (X, y, [str(i) for i in ids])
                X, y, ids = self._arrays[key]
                pos = {c: i for i, c in enumerate(ids)}
                sel = np.array([pos[c] for c in want if c in pos], dtype=int)
                Xs.append(X[sel]), ys.append(y[sel]), idss.extend(ids[i] for i in sel)
            self._arrays[split] = (np.concatenate(Xs), np.concatenate(ys), idss)
        return self._arrays[split]

    @property
    def pool_size(self) -> int:
        return len(self.arrays("train")[2])

    def labeled(self) -> pd.DataFrame:
        """Current label of each labelled pool case, from the store (the only truth the loop trains on)."""
        lab = self.study.labels(latest=True)
        pool = set(self.arrays("train")[2])
        return lab[lab["case_id"].astype(str).isin(pool)].reset_index(drop=True)

    def finished_rounds(self) -> int:
        return int(self.study.last_finished_round())

    def _open_round(self) -> pd.Series | None:
        r = self.study.rounds()
        open_ = r[r["status"] != "finished"] if len(r) else r
        return None if len(open_) == 0 else open_.iloc[-1]

    def checkpoint_path(self, number: int) -> Path:
        return Path(self.study.folder) / "models" / f"round_{number:03d}.pt"

    def current_model(self) -> tuple[Any, str | None]:
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

    # ------------------------------------------------------------------ scoring and selection
    def _select(self, number: int) -> tuple[list[str], np.ndarray, str, dict[str, Any]]:
        """Choose the next batch among the unlabelled pool cases (seeded by seed and round number)."""
        from medwb.al.acquire import select

        X, _, ids = self.arrays("train")
        done = set(self.labeled()["case_id"].astype(str))
        unl = np.array([i for i, c in enumerate(ids) if c not in done], dtype=int)
        lab = np.array([i for i, c in enumerate(ids) if c in done], dtype=int)
        if len(unl) == 0:
            raise StoreError("every pool case is labelled. Fix: stop the loop; there is nothing left to select")
        k = min(self.batch_size, len(unl))
        rs = self.seed * 1000 + number
        model, version = self.current_model()
        if self.strategy == "random":
            name, kw = "random", {"n_pool": len(unl)}
        elif model is None:
            name = self.cold_start
            kw = {"n_pool": len(unl)} if name == "random" else \
                {"embeddings": pixel_features(X[unl], random_state=rs)}
        else:
            name, kw = self.strategy, self.score_pool(model, X, unl, lab, rs)
        idx, scores = select(name, k, random_state=rs, **kw)
        idx = np.asarray(idx, dtype=int)
        scores = np.asarray(scores, dtype=float)
        if len(scores) == len(unl):  # a score per pool case: keep those of the selected ones
            scores = scores[idx]
        params = {"k": k, "seed": self.seed, "random_state": rs, "mc_passes": self.mc_passes,
                  "requested_strategy": self.strategy, "voxel_reduce": self.voxel_reduce, "model_version": version, "pool_size": len(ids),
                  "n_labeled_before": len(lab)}
        return [ids[i] for i in unl[idx]], scores, name, params

    def score_pool(self, model: Any, X: np.ndarray, unl: np.ndarray, lab: np.ndarray, rs: int) -> dict[str, Any]:
        """Inputs of every strategy: MC-dropout samples, mean probabilities, embeddings (pool and labelled)."""
        from medwb.models import embed
        from medwb.al.uncertainty import mc_dropout_proba

        out: dict[str, Any] = {}
        if self.ds.task == "classification":
            mc = mc_dropout_proba(model, X[unl], passes=self.mc_passes, fast=True, seed=rs)
            out["mc_probs"], out["probs"] = mc, mc.mean(0)
        else:
            out.update(self._segmentation_scores(model, X[unl], rs))
        if self.strategy in NEEDS_EMBEDDINGS:
            out["embeddings"] = embed(model, X[unl])
            out["labeled_embeddings"] = embed(model, X[lab]) if len(lab) else None
        return out

    def _segmentation_scores(self, model: Any, X: np.ndarray, rs: int, chunk: int = 16) -> dict[str, Any]:
        """Per-image uncertainty of a segmentation pool: voxel scores reduced per image (``voxel_reduce``:
        top-k% mean by default, so a small structure is not drowned by the background), chunk by chunk so
        T x N x K x voxels never sits in memory; passed to the strategies as ``score_<kind>`` arrays."""
        from medwb.al.acquire import image_scores_from_mc
        from medwb.al.uncertainty import mc_dropout_proba

        parts: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(X), chunk):
            mc = mc_dropout_proba(model, X[i:i + chunk], passes=self.mc_passes, fast=True, seed=rs + i)
            for key, val in image_scores_from_mc(mc, how=self.voxel_reduce).items():
                parts.setdefault(key, []).append(val)
        return {k: np.concatenate(v) for k, v in parts.items()}

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
        self.round = number
        done = self.labels_in_round(number)
        todo = [c for c in selected if c not in done]
        batch = pd.DataFrame({"case_id": todo, "score": [float(score_of[c]) for c in todo]})
        return self._prelabel(batch)

    def labels_in_round(self, number: int) -> set[str]:
        """Selected cases of round ``number`` that already have a current label (saved by the loop, the review
        widget or a mask import): resuming a half-labelled round asks only for the others."""
        r = self.study.rounds()
        row = r[r["number"] == number]
        if len(row) == 0:
            return set()
        labelled = set(self.study.labels(latest=True)["case_id"].astype(str))
        return {str(c) for c in row.iloc[0]["selected_ids"]} & labelled

    def _prelabel(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Pre-label the batch with the current model: temperature fitted on the validation split and an
        auto-accept threshold whose estimated error stays <= ``autolabel_target_error`` (medwb.al.autolabel).

        Also keeps ``self.autolabel_stats`` (coverage, and the measured error of the would-be auto-accepted
        labels when the dataset has ground truth for them) for the round's metrics.
        """
        batch = batch.assign(prelabel=pd.array([pd.NA] * len(batch), dtype="Int64"), confidence=np.nan, auto=False)
        self.autolabel_stats: dict[str, float] = {}
        model, _ = self.current_model()
        if model is None or len(batch) == 0:
            return batch
        from medwb.al.autolabel import autolabel_report, fit_autolabel, prelabel
        from medwb.models import predict_proba

        X, y, ids = self.arrays("train")
        pos = np.array([ids.index(c) for c in batch["case_id"]], dtype=int)
        Xv, yv, _ = self.arrays("val")
        temperature, choice = fit_autolabel(predict_proba(model, Xv), yv, target_error=self.autolabel_target_error,
                                            seed=self.seed, threshold_cases=self._calibration_cases(model, X[pos], Xv))
        pre = prelabel(predict_proba(model, X[pos]), temperature, choice.threshold)
        if self.ds.task == "classification":
            batch["prelabel"] = pd.array(pre.labels.astype(int), dtype="Int64")
        batch["confidence"] = pre.confidence
        batch["auto"] = pre.auto_accept
        truth = y[pos]
        has_truth = bool(np.all(truth >= 0)) if self.ds.task == "classification" else bool(np.all(truth.max(
            axis=tuple(range(1, truth.ndim))) >= 0))
        rep = autolabel_report(pre, truth if has_truth else None)
        self.autolabel_stats = {f"autolabel_{k}": float(v) for k, v in rep.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.autolabel_stats["autolabel_threshold"] = float(choice.threshold)
        return batch

    def _calibration_cases(self, model: Any, X_batch: np.ndarray, X_val: np.ndarray) -> np.ndarray | None:
        """Validation cases that choose the batch's auto-accept threshold (:func:`medwb.al.autolabel.cases_like_batch`):
        at least as uncertain (1 - max of the MC-dropout mean probability) and as novel (embedding distance to the
        nearest labelled pool case) as the easiest batch case. Classification only; None = the whole split."""
        if self.ds.task != "classification" or len(X_batch) == 0:
            return None
        from medwb.al.autolabel import cases_like_batch

        X, _, ids = self.arrays("train")
        done = set(self.labeled()["case_id"].astype(str))
        X_lab = X[[i for i, c in enumerate(ids) if c in done]]
        return cases_like_batch(*batch_difficulty(model, X_val, X_batch, X_lab, passes=self.mc_passes, seed=self.seed))

    def save_label(self, case_id: str, answer: LabelAnswer) -> int:
        """Record one label of the open round (one transaction in the store); returns the label id."""
        if self.round is None:
            raise StoreError("no open round. Fix: call propose() before saving labels")
        _, version = self.current_model()
        mask_path = answer.mask_path
        if answer.mask is not None:
            mask_path = str(self.study.save_mask(case_id, answer.mask, tag=f"{answer.annotator}-r{self.round}"))
        return self.study.add_label(
            str(case_id), value=answer.value, mask_path=mask_path, source=answer.source,
            annotator=answer.annotator, seconds=answer.seconds, round=self.round, model_version=version,
        )

    def complete(self) -> RoundResult:
        """Retrain on every label in the store, checkpoint, register the model and close the round."""
        from medwb.models import save_checkpoint

        open_ = self._open_round()
        if open_ is None:
            raise StoreError("no open round to complete. Fix: call propose() first")
        number = int(open_["number"])
        models = self.study.models()
        mine = models[models["round"] == number] if len(models) else models
        if len(mine):  # killed after the model was registered: only closing the round is missing
            metrics, version = dict(mine.iloc[-1]["metrics"]), str(mine.iloc[-1]["version"])
        else:
            model, metrics = self.train_on_labels()
            metrics.update(getattr(self, "autolabel_stats", {}))
            # size: the spatial size of the arrays the network was trained on, so that a report or an explanation
            # feeds it the same grid (a study trained at a custom --size must not be scored at the default one)
            size = [int(v) for v in self.arrays("train")[0].shape[2:]]
            path = save_checkpoint(model, self.checkpoint_path(number), {"round": number, "seed": self.seed,
                                                                         "metrics": metrics, "size": size})
            version = self.study.add_model(number, path, metrics)
            self._model, self._model_version = model, version
        self.study.finish_round(number)
        self.round = None
        return RoundResult(number, str(open_["strategy"]), [str(c) for c in open_["selected_ids"]],
                           int(metrics.get("n_labeled", len(self.labeled()))), metrics, version)

    def train_on_labels(self) -> tuple[Any, dict[str, float]]:
        """Train a fresh model on the store's current labels of the pool."""
        lab = self.labeled()
        if len(lab) == 0:
            raise StoreError("no labelled pool case to train on. Fix: save at least one label in the round")
        X, _, ids = self.arrays("train")
        pos = {c: i for i, c in enumerate(ids)}
        idx = np.array([pos[c] for c in lab["case_id"].astype(str)], dtype=int)
        return self.fit(X[idx], self._targets(lab))

    def fit(self, X: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, float]]:
        """One training run with the loop's model and schedule (also the all-labels reference).

        Metrics: n_labeled, best_epoch, train_seconds, val_* and (with ``evaluate_test``) test_*.
        """
        from medwb.models import evaluate, train

        Xv, yv, _ = self.arrays("val")
        model = self.model_fn(self.seed)
        res = train(model, X, y, Xv, yv, task=self.ds.task, config=self.train_config, progress=self.progress)
        metrics: dict[str, float] = {"n_labeled": float(len(y)), "best_epoch": float(res.best_epoch),
                                     "train_seconds": float(res.seconds)}
        metrics.update({f"val_{k}": float(v) for k, v in evaluate(res.model, Xv, yv).items()})
        if self.evaluate_test:
            Xt, yt, _ = self.arrays("test")
            metrics.update({f"test_{k}": float(v) for k, v in evaluate(res.model, Xt, yt).items()})
        return res.model, metrics

    def _targets(self, lab: pd.DataFrame) -> np.ndarray:
        """Training targets from the store: class values, or mask files resized (nearest) to the loop's size."""
        if self.ds.task == "classification":
            return lab["value"].astype(int).to_numpy()
        from medwb.data.dataset import resize
        from medwb.store import read_mask

        _, y, _ = self.arrays("train")
        spatial = tuple(y.shape[2:])
        masks = []
        for mp in lab["mask_path"]:
            m = read_mask(mp)
            while m.ndim > len(spatial):
                m = m[0]
            m = m[None]
            if tuple(m.shape[1:]) != spatial:
                m = resize(m, spatial, "mask")
            masks.append(np.asarray(m, dtype=np.int64))
        return np.stack(masks)

    def prelabel_mask(self, case_id: str) -> np.ndarray | None:
        """The current model's predicted mask for a case at the image's own size (segmentation pre-label)."""
        model, _ = self.current_model()
        if model is None or self.ds.task != "segmentation":
            return None
        from medwb.data.dataset import resize
        from medwb.models import predict_proba

        X, _, ids = self.arrays("train")
        i = ids.index(str(case_id))
        pred = predict_proba(model, X[i:i + 1]).argmax(1).astype(np.int64)  # (1, *size)
        native = self.ds.load_image(str(case_id)).shape[1:]
        return np.asarray(resize(pred, native, "mask"), dtype=np.int64)[0] if tuple(native) != pred.shape[1:] \
            else pred[0]

    def out_of_fold_proba(self, *, folds: int = 3) -> tuple[list[str], np.ndarray]:
        """Out-of-fold class probabilities of the labelled pool cases, for the label audit (medwb.al.audit):
        each case is scored by a fresh model (same network and schedule) that never saw its label."""
        from medwb.al.audit import out_of_fold_proba
        from medwb.models import predict_proba, train

        if self.ds.task != "classification":
            raise StoreError("the label audit needs class labels. Fix: audit a classification study")
        lab = self.labeled()
        X, _, ids = self.arrays("train")
        pos = {c: i for i, c in enumerate(ids)}
        Xl = X[[pos[c] for c in lab["case_id"].astype(str)]]
        Xv, yv, _ = self.arrays("val")

        def train_fn(Xtr: np.ndarray, ytr: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
            res = train(self.model_fn(self.seed), Xtr, ytr, Xv, yv, task="classification",
                        config=self.train_config, progress=False)
            return lambda Xte: predict_proba(res.model, Xte)

        probs = out_of_fold_proba(train_fn, Xl, self._targets(lab), folds=folds, seed=self.seed,
                                  progress=self.progress)
        return list(lab["case_id"].astype(str)), probs

    def export_batch_nifti(self, case_ids: Iterable[str], folder: str | Path) -> pd.DataFrame:
        """Write the batch's pre-label masks (the current model's prediction, empty before any model) as
        ``<case>.nii.gz`` in each image's own grid and affine, with ``manifest.csv``, for editing in 3D Slicer or
        ITK-SNAP; re-import the edited folder with ``study.import_masks(folder, annotator)``."""
        import nibabel as nib

        from medwb.store import safe_name

        if self.ds.task != "segmentation":
            raise StoreError("NIfTI mask export is for segmentation studies. Fix: label classes in the review widget")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for cid in [str(c) for c in case_ids]:
            m = self.prelabel_mask(cid)
            if m is None:
                m = np.zeros(self.ds.load_image(cid).shape[1:], dtype=np.int64)
            vol = m[..., None] if m.ndim == 2 else m
            img = nib.Nifti1Image(vol.astype(np.int16), np.asarray(self.ds.affine(cid), dtype=float))
            img.header.set_intent("label")
            fname = f"{safe_name(cid)}.nii.gz"
            nib.save(img, str(folder / fname))
            rows.append({"file": fname, "case_id": cid})
        manifest = pd.DataFrame(rows, columns=["file", "case_id"])
        manifest.to_csv(folder / "manifest.csv", index=False)
        return manifest

    def commit_auto(self, batch: pd.DataFrame) -> pd.DataFrame:
        """With ``auto_accept``: store the batch's confident pre-labels as ``auto`` labels (no person involved,
        annotator ``model:<version>``) and return the rows that still need a person."""
        if not self.auto_accept or len(batch) == 0 or not batch["auto"].any():
            return batch
        auto_by = f"model:{self.current_model()[1]}"
        for row in batch[batch["auto"]].itertuples(index=False):
            cid = str(row.case_id)
            if self.ds.task == "classification":
                self.save_label(cid, LabelAnswer(value=int(row.prelabel), source="auto", annotator=auto_by))
            else:
                self.save_label(cid, LabelAnswer(mask=self.prelabel_mask(cid), source="auto", annotator=auto_by))
        return batch[~batch["auto"]].reset_index(drop=True)

    def uncertainty_map(self, case_id: str) -> np.ndarray | None:
        """Voxel-wise predictive entropy of MC-dropout samples for one case (segmentation; None otherwise),
        at the image's own size, for the review widget."""
        model, _ = self.current_model()
        if model is None or self.ds.task != "segmentation":
            return None
        from medwb.data.dataset import resize
        from medwb.al.uncertainty import mc_uncertainty_maps

        X, _, ids = self.arrays("train")
        i = ids.index(str(case_id))
        ent = mc_uncertainty_maps(model, X[i:i + 1], passes=self.mc_passes, seed=self.seed, kinds=("entropy",))[
            "entropy"][0]
        native = tuple(self.ds.load_image(str(case_id)).shape[1:])
        return ent if ent.shape == native else np.asarray(resize(ent[None], native, "image"))[0]

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


def batch_difficulty(model: Any, X_val: np.ndarray, X_batch: np.ndarray, X_labeled: np.ndarray, *, passes: int = 20,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(uncertainty_val, uncertainty_batch, novelty_val, novelty_batch) for :func:`medwb.al.autolabel.cases_like_batch`.

    Uncertainty: 1 - max of the MC-dropout mean probability. Novelty: Euclidean distance in the model's embedding
    to the nearest labelled case (None when nothing is labelled yet).
    """
    from medwb.al.acquire import _min_sq_dist  # the core-set strategy's distance to the labelled set
    from medwb.models import embed
    from medwb.al.uncertainty import mc_dropout_proba

    def uncertainty(X: np.ndarray) -> np.ndarray:
        return 1.0 - mc_dropout_proba(model, X, passes=passes, fast=True, seed=seed).mean(0).max(1)

    u_val, u_batch = uncertainty(X_val), uncertainty(X_batch)
    if len(X_labeled) == 0:
        return u_val, u_batch, None, None
    lab = embed(model, X_labeled).astype(np.float64)

    def novelty(X: np.ndarray) -> np.ndarray:
        return np.sqrt(_min_sq_dist(embed(model, X).astype(np.float64), lab))

    return u_val, u_batch, novelty(X_val), novelty(X_batch)


def default_size(dataset: Any) -> tuple[int, ...] | None:
    """Training size: None for fixed-size classification sets; otherwise the median shape rounded to a multiple
    of 16 (UNet-friendly) and capped for CPU (2D 128, 3D 48)."""
    shapes = [s for s in dataset.cohort["shape"].dropna().astype(str)]
    dims = np.array([[int(float(v)) for v in s.split("x")] for s in shapes])
    if dataset.task == "classification" and (dims == dims[0]).all():
        return None
    cap = 128 if dataset.ndim == 2 else 48
    med = np.median(dims, axis=0)
    return tuple(int(min(cap, max(16, 16 * round(m / 16)))) for m in med)


def pixel_features(X: np.ndarray, *, random_state: int, dim: int = 32) -> np.ndarray:
    """Label-free features for the cold start (no model exists yet): PCA of the pixels."""
    from sklearn.decomposition import PCA

    flat = X.reshape(len(X), -1).astype(np.float32)
    n = max(1, min(dim, len(flat) - 1, flat.shape[1]))
    return PCA(n_components=n, random_state=random_state).fit_transform(flat).astype(np.float32)
