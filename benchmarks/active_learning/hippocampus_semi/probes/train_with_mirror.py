"""Session-21 probe (see README.md here): run as its README says; numbers there."""
import sys, numpy as np, torch
import medwb.models.augment as aug
from medwb.al.fit import fit_round
from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config, predict_proba
from medwb.metrics import dice
AX = int(sys.argv[3])
orig = aug.augment_batch
def patched(x, y, g, kind="shift"):
    x, y = orig(x, y, g, kind)
    if kind == "shift" and x.ndim == 5:
        m = torch.rand(x.shape[0], generator=g) < 0.5
        xf = torch.flip(x, (AX,)); x = torch.where(m.view(-1, 1, 1, 1, 1), xf, x)
        if y is not None and y.ndim == x.ndim:
            yf = torch.flip(y, (AX,)); y = torch.where(m.view(-1, 1, 1, 1, 1), yf, y)
    return x, y
import medwb.models.train  # noqa: F401 - registers the submodule patched below
aug.augment_batch = patched
tr = sys.modules["medwb.models.train"]
if hasattr(tr, "augment_batch"): tr.augment_batch = patched
H = sys.argv[1]; seed = int(sys.argv[2]); n = int(sys.argv[4]) if len(sys.argv) > 4 else 17
ds = open_dataset(H, progress=False)
inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), (32, 48, 32))
(Xp, yp, _), val, test = inputs["train"], inputs["val"][:2], inputs["test"][:2]
lab = np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False)) if n < len(Xp) else np.arange(len(Xp))
config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
model = build_for_dataset(ds, seed=seed)
model, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config, semi=False, progress=False)
X, y = test
def D(p):
    a = p.argmax(1); return np.mean([dice(a[i], y[i, 0], n_classes=3) for i in range(len(a))])
p0 = predict_proba(model, X); pf = np.flip(predict_proba(model, np.ascontiguousarray(np.flip(X, AX))), AX)
print("seed", seed, "n", n, "axis", AX, "plain", D(p0), "mirrored", D(pf), "tta", D((p0 + pf) / 2), flush=True)
