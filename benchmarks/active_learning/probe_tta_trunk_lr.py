"""Probe (issue 12, session 8): dihedral test-time augmentation and a lower trunk learning rate, BloodMNIST,
1200 random labels (seed draws as bench_recipe.py), pre+aug+cos at 40 epochs (the schedule before min_passes).

    OMP_NUM_THREADS=1 python benchmarks/active_learning/probe_tta_trunk_lr.py BLOODMNIST_NPZ SEED TRUNK_LR_SCALE

One JSON line: test accuracy without and with the 8-fold dihedral TTA (mean of softmaxes). The trunk's learning
rate is scaled by patching AdamW's parameter groups (a probe, not a medwb option). Results: recipes/README.md.
"""
import sys, time, json
import numpy as np, torch
from pathlib import Path
from medwb.al.fit import fit_round
from medwb.al.representation import pretrain_build_args, pretrained_representation
from medwb.data import open_dataset
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config
from medwb.models import predict_proba

ds = open_dataset(sys.argv[1], progress=False)
Xp, yp, _ = ds.arrays("train"); Xv, yv, _ = ds.arrays("val"); Xt, yt, _ = ds.arrays("test")
args = pretrain_build_args(lambda s: build_for_dataset(ds, seed=s), None)
pre = pretrained_representation(Path(__file__).parent / "bloodmnist_medwb", Xp, build_args=args, config=None, progress=False)
seed = int(sys.argv[2]); trunk_scale = float(sys.argv[3])
lab = np.sort(np.random.default_rng(seed).choice(len(Xp), 1200, replace=False))
real = torch.optim.AdamW
def adamw(params, lr, weight_decay):
    params = list(params)
    if trunk_scale == 1.0: return real(params, lr=lr, weight_decay=weight_decay)
    trunk = {id(p) for p in model.trunk.parameters()}
    return real([{"params": [p for p in params if id(p) in trunk], "lr": lr * trunk_scale},
                 {"params": [p for p in params if id(p) not in trunk], "lr": lr}], lr=lr, weight_decay=weight_decay)
torch.optim.AdamW = adamw
import medwb.al.representation as R
orig = R.with_pretrained
def wp(m, p, *a, **k):
    global model
    model = orig(m, p, *a, **k); return model
R.with_pretrained = wp
import medwb.al.fit as F
if hasattr(F, "with_pretrained"): F.with_pretrained = wp
cfg = default_train_config(ds.task, seed=seed, modality=ds.modality, augment="dihedral", min_passes=0)
t = time.perf_counter()
m, met = fit_round(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], (Xv, yv), task=ds.task, config=cfg, pretrained=pre, test=(Xt, yt), progress=False)
sec = time.perf_counter() - t
from medwb.models import decide, decision_of
def tta(X):
    ps = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(X, k, axes=(2, 3))
            if flip: x = x[..., ::-1]
            ps.append(predict_proba(m, np.ascontiguousarray(x)))
    return np.mean(ps, 0)
p1 = predict_proba(m, Xt); p8 = tta(Xt)
acc = lambda p: float((decide(p, decision_of(m)) == yt).mean())
acc_argmax = lambda p: float((p.argmax(1) == yt).mean())
print(json.dumps({"seed": seed, "trunk_scale": trunk_scale, "seconds": sec, "metric_test_acc": met["test_accuracy"],
                  "acc": acc(p1), "acc_tta": acc(p8), "argmax": acc_argmax(p1), "argmax_tta": acc_argmax(p8)}), flush=True)
