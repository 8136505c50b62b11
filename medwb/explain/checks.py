"""Sanity and faithfulness checks computed next to every explanation set; each returns pass/fail + numbers.

* **Cascading model-parameter randomization** (Adebayo et al., "Sanity Checks for Saliency Maps", 2018):
  re-initialize the layers from the output towards the input, cumulatively, recompute the maps and compare
  them with the original ones (Spearman rank correlation of |map|, SSIM of the max-scaled |map|). A map that
  still looks the same once the weights are random explains the input, not the model -> fail.
* **Deletion / insertion** (Petsiuk et al., RISE, 2018): remove (insert) voxels in the order the map ranks
  them and follow the target-class probability; the area under the curve is compared with the same curve
  for random maps. Faithful maps delete faster (lower deletion AUC) and insert faster (higher insertion AUC).
* **Mask energy share** (pointing-game style, where reference masks exist): fraction of |map| inside the
  mask against the mask's area fraction (what a uniform map would score), plus the pointing-game hit rate.

Pass thresholds are fixed up front (module constants), never tuned per result; a failing method is
reported with ``passed=False`` and shown as FAIL in :func:`format_table` / overlays, not dropped.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medwb.errors import DataError
from medwb.explain.attributions import (SIGNED_METHODS, as_tensor, attribute, batches, canonical_method,
                                        forward_logits)

#: randomization passes when, once every layer is randomized, mean Spearman and mean SSIM are both below these
RANDOMIZATION_MAX_SPEARMAN = 0.5
RANDOMIZATION_MAX_SSIM = 0.5


@dataclass
class CheckResult:
    """One check for one method: verdict + headline number + its reference, and per-step details."""

    check: str
    method: str
    passed: bool
    value: float
    reference: float
    criterion: str
    details: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"check": self.check, "method": self.method, "passed": bool(self.passed),
                "status": "pass" if self.passed else "FAIL", "value": float(self.value),
                "reference": float(self.reference), "criterion": self.criterion, **self.extra}


# ------------------------------------------------------------------------------------------ randomization
def parameter_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters, in forward-definition order (input -> output)."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    """Re-initialize one module: its own ``reset_parameters`` under a seeded RNG, else N(0, 0.02) noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                p.normal_(0.0, 0.02)


def randomize_layers(model: nn.Module, n_layers: int | None = None, *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with its top ``n_layers`` parameter layers (output side) re-initialized; all
    layers when ``n_layers`` is None. The original model is not touched."""
    m = copy.deepcopy(model)
    layers = parameter_layers(m)[::-1]
    mods = dict(m.named_modules())
    gen = torch.Generator().manual_seed(seed)
    for name in layers[: len(layers) if n_layers is None else n_layers]:
        _reinit(mods[name], gen)
    return m


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    out = np.zeros(len(a))
    for i in range(len(a)):
        ra, rb = rankdata(a[i].ravel()), rankdata(b[i].ravel())
        sa, sb = ra.std(), rb.std()
        out[i] = 0.0 if sa == 0 or sb == 0 else float(np.corrcoef(ra, rb)[0, 1])  # constant map: no rank info
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    """|map| scaled per sample to [0, 1] (what a heat map shows)."""
    a = np.abs(m).reshape(len(m), -1)
    mx = a.max(1, keepdims=True)
    return (a / np.where(mx > 0, mx, 1.0)).reshape(m.shape)


def _ssim_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    ua, ub = _unit(a), _unit(b)
    out = np.zeros(len(a))
    for i in range(len(a)):
        x, y = ua[i, 0], ub[i, 0]
        win = min(7, *[s if s % 2 else s - 1 for s in x.shape])
        out[i] = float(structural_similarity(x, y, data_range=1.0, win_size=max(3, win)))
    return out


def similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample Spearman rank correlation of |maps| and SSIM of max-scaled |maps| (Adebayo et al.)."""
    a, b = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    return _spearman_rows(a, b), _ssim_rows(a, b)


def method_name(method: Any) -> str:
    """Canonical name of a method given by name, or a callable's ``__name__``."""
    return getattr(method, "__name__", "custom") if callable(method) else canonical_method(method)


def randomization_check(model: nn.Module, X: np.ndarray, target: Any = None, *, method: Any = "gradcam",
                        original: np.ndarray | None = None, max_steps: int = 6, seed: int = 0,
                        batch_size: int | None = None, progress: bool = True, **method_kwargs: Any) -> CheckResult:
    """Cascading randomization from the output layer down, cumulative; maps compared at up to ``max_steps``
    evenly spaced depths, always including "all layers random". The target class stays the one of the
    trained model (so the comparison is about the same question)."""
    from tqdm.auto import tqdm

    name = method_name(method)
    x = as_tensor(X)
    if target is None:
        logits = forward_logits(model, x)
        if logits.ndim == 2:
            target = logits.argmax(1).numpy()
    if original is None:
        original = attribute(model, x, target, method=method, batch_size=batch_size, progress=False, **method_kwargs)
    layers = parameter_layers(model)[::-1]
    steps = sorted(set(np.linspace(1, len(layers), num=min(max_steps, len(layers))).round().astype(int).tolist()))
    rows = []
    for k in tqdm(steps, desc=f"randomization ({name})", disable=not progress, leave=False):
        rnd = randomize_layers(model, k, seed=seed)
        maps = attribute(rnd, x, target, method=method, batch_size=batch_size, progress=False, **method_kwargs)
        rho, ssim = similarity(original, maps)
        rows.append({"step": k, "randomized_down_to": layers[k - 1], "spearman": float(rho.mean()),
                     "ssim": float(ssim.mean())})
    details = pd.DataFrame(rows)
    last = details.iloc[-1]
    passed = bool(last.spearman < RANDOMIZATION_MAX_SPEARMAN and last.ssim < RANDOMIZATION_MAX_SSIM)
    return CheckResult("randomization", name, passed, float(last.spearman), RANDOMIZATION_MAX_SPEARMAN,
                       f"all layers random: Spearman < {RANDOMIZATION_MAX_SPEARMAN} and SSIM < "
                       f"{RANDOMIZATION_MAX_SSIM}", details,
                       {"ssim_final": float(last.ssim), "spearman_first_step": float(details.spearman.iloc[0])})


# ------------------------------------------------------------------------------------- deletion / insertion
def _target_score_fn(model: nn.Module, x: torch.Tensor, target: Any):
    """Score used along the curves: target-class softmax probability (segmenters: its mean over the region
    the model predicts as that class on the unperturbed image)."""
    logits = forward_logits(model, x)
    seg = logits.ndim > 2
    if target is None:
        if seg:
            pred = logits.argmax(1).flatten(1)
            counts = torch.stack([(pred == c).sum(1) for c in range(logits.shape[1])], 1)
            counts[:, 0] = -1
            target = counts.argmax(1).numpy()
        else:
            target = logits.argmax(1).numpy()
    t = torch.as_tensor(np.broadcast_to(np.asarray(target), (len(x),)).copy()).long()
    region = (logits.argmax(1, keepdim=True) == t.view(-1, *([1] * (logits.ndim - 1)))).float() if seg else None

    def score(xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(forward_logits(model, xb), 1)
        tb = t[idx]
        if not seg:
            return p.gather(1, tb.view(-1, 1)).squeeze(1)
        pt = p.gather(1, tb.view(-1, 1, *([1] * (p.ndim - 2)))).squeeze(1)
        r = region[idx, 0]
        return (pt * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp(min=1)

    return score


def perturbation_curves(model: nn.Module, X: np.ndarray, maps: np.ndarray, target: Any = None, *,
                        steps: int | None = None,
                        baseline: float = 0.0, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves, each (N, steps+1): score after the top ``k/steps`` fraction of voxels
    (ranked by the map, highest first) is replaced by ``baseline`` (deletion) or copied into an all-
    ``baseline`` image (insertion). ``steps`` defaults to 20 in 2D and 10 in 3D (each step is a forward pass
    per image and curve)."""
    x = as_tensor(X)
    steps = steps or (20 if x.ndim == 4 else 10)
    maps = np.asarray(maps, np.float32)
    if maps.shape[0] != x.shape[0] or maps.shape[2:] != tuple(x.shape[2:]):
        raise DataError(None, f"maps {maps.shape} do not match images {tuple(x.shape)}",
                        "pass maps computed by attribute() on the same X")
    n = len(x)
    vox = int(np.prod(x.shape[2:]))
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(n)[:, None], order] = np.arange(vox)[None, :]
    ranks_t = torch.as_tensor(ranks.reshape(n, 1, *x.shape[2:]))
    score = _target_score_fn(model, x, target)
    fracs = np.linspace(0, 1, steps + 1)
    dele = np.zeros((n, steps + 1), np.float32)
    ins = np.zeros((n, steps + 1), np.float32)
    for s in batches(n, max(1, batch_size // (steps + 1)), progress, "deletion/insertion"):
        idx = torch.arange(n)[s]
        xb, rb = x[s], ranks_t[s]
        m = len(idx)
        keep = [(rb < int(round(f * vox))) for f in fracs]  # top-k voxels per step
        dx = torch.cat([torch.where(k, torch.full_like(xb, baseline), xb) for k in keep])
        ix = torch.cat([torch.where(k, xb, torch.full_like(xb, baseline)) for k in keep])
        rep = idx.repeat(len(fracs))
        dele[s] = score(dx, rep).view(len(fracs), m).T.numpy()
        ins[s] = score(ix, rep).view(len(fracs), m).T.numpy()
    return dele, ins


def auc(curve: np.ndarray) -> np.ndarray:
    """Normalized area under curves sampled at evenly spaced fractions 0..1 (trapezoid), per row."""
    c = np.atleast_2d(curve)
    return np.trapezoid(c, dx=1.0 / (c.shape[1] - 1), axis=1)


def deletion_insertion_check(model: nn.Module, X: np.ndarray, maps: np.ndarray, target: Any = None, *,
                             method: str = "map", steps: int | None = None, baseline: float = 0.0,
                             random_state: int = 0,
                             batch_size: int = 64) -> tuple[CheckResult, CheckResult]:
    """Deletion AUC (lower is better) and insertion AUC (higher is better) of ``maps`` against random maps
    (uniform noise, ``random_state``) on the same images and score."""
    rng = np.random.default_rng(random_state)
    rand = rng.random(np.asarray(maps).shape).astype(np.float32)
    d, i = perturbation_curves(model, X, maps, target, steps=steps, baseline=baseline, batch_size=batch_size)
    dr, ir = perturbation_curves(model, X, rand, target, steps=steps, baseline=baseline, batch_size=batch_size)
    d_auc, i_auc, dr_auc, ir_auc = (float(auc(c).mean()) for c in (d, i, dr, ir))
    details = pd.DataFrame({"fraction": np.linspace(0, 1, d.shape[1]), "deletion": d.mean(0),
                            "deletion_random": dr.mean(0), "insertion": i.mean(0), "insertion_random": ir.mean(0)})
    dc = CheckResult("deletion_auc", method, d_auc < dr_auc, d_auc, dr_auc, "deletion AUC < random-map deletion AUC",
                     details)
    ic = CheckResult("insertion_auc", method, i_auc > ir_auc, i_auc, ir_auc,
                     "insertion AUC > random-map insertion AUC", details)
    return dc, ic


# -------------------------------------------------------------------------------------------- mask energy
def mask_energy_check(maps: np.ndarray, masks: np.ndarray, *, method: str = "map") -> CheckResult:
    """Share of |map| inside the (binary) reference mask vs the mask's area fraction, and pointing-game hits
    (argmax of the map inside the mask). Cases with an empty mask are skipped."""
    a = np.abs(np.asarray(maps, np.float64)).reshape(len(maps), -1)
    m = (np.asarray(masks) > 0).reshape(len(masks), -1)
    if a.shape != m.shape:
        raise DataError(None, f"maps {np.shape(maps)} and masks {np.shape(masks)} differ in size",
                        "resize masks to the model input size (ds.arrays(..., size=...)) before the check")
    ok = m.any(1) & (a.sum(1) > 0)
    if not ok.any():
        raise DataError(None, "every mask (or map) is empty", "pass cases whose reference mask has foreground")
    a, m = a[ok], m[ok]
    share = (a * m).sum(1) / a.sum(1)
    area = m.mean(1)
    hit = m[np.arange(len(a)), a.argmax(1)]
    details = pd.DataFrame({"energy_share": share, "mask_area_fraction": area, "pointing_hit": hit})
    return CheckResult("mask_energy", method, bool(share.mean() > area.mean()), float(share.mean()),
                       float(area.mean()), "energy share inside mask > mask area fraction (uniform map)", details,
                       {"pointing_game": float(hit.mean()), "n_cases": float(ok.sum())})


# ------------------------------------------------------------------------------------------------- all
def run_checks(model: nn.Module, X: np.ndarray, maps: np.ndarray, *, method: Any, target: Any = None,
               masks: np.ndarray | None = None, randomization: bool = True, max_steps: int = 6, seed: int = 0,
               steps: int | None = None, progress: bool = True) -> list[CheckResult]:
    """Every applicable check for one method's maps on the same images."""
    name = method_name(method)
    out: list[CheckResult] = []
    if randomization:
        out.append(randomization_check(model, X, target, method=method, original=maps, max_steps=max_steps,
                                       seed=seed, progress=progress))
    out.extend(deletion_insertion_check(model, X, maps, target, method=name, steps=steps, random_state=seed))
    if masks is not None and (np.asarray(masks) > 0).reshape(len(masks), -1).any(1).any():
        out.append(mask_energy_check(maps, masks, method=name))  # skipped when no case has a reference region
    return out


def results_table(results: Sequence[CheckResult]) -> pd.DataFrame:
    """One row per (method, check) with pass/FAIL kept visible."""
    return pd.DataFrame([r.row() for r in results])


def format_table(df: pd.DataFrame) -> str:
    """Plain-text table for terminals and the benchmark log; failures marked ``FAIL <<<``."""
    d = df.copy()
    d["status"] = np.where(d["passed"], "pass", "FAIL <<<")
    cols = [c for c in ("method", "check", "value", "reference", "status", "criterion") if c in d]
    return d[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def signed(method: str) -> bool:
    """Whether a method's maps carry a sign (diverging colour map, |map| for energy)."""
    return canonical_method(method) in SIGNED_METHODS
