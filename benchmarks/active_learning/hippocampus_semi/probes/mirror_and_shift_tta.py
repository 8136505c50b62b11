"""Session-21 probe (see README.md here): run as its README says; numbers there."""
import sys, numpy as np
from medwb.al.fit import fit_round
from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config, predict_proba
from medwb.metrics import dice
H = sys.argv[1]; seed = int(sys.argv[2]); n = 17
ds = open_dataset(H, progress=False)
inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), (32, 48, 32))
(Xp, yp, _), val, test = inputs["train"], inputs["val"][:2], inputs["test"][:2]
lab = np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False))
config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
model = build_for_dataset(ds, seed=seed)
model, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config, semi=False, progress=False)

X, y = test
def D(p): 
    a = p.argmax(1); return np.mean([dice(a[i], y[i, 0], n_classes=3) for i in range(len(a))])
p0 = predict_proba(model, X); print("plain", D(p0))
for ax in (2, 3, 4):
    pf = np.flip(predict_proba(model, np.ascontiguousarray(np.flip(X, ax))), ax)
    print("mirror", ax, D(pf), "tta", D((p0 + pf) / 2), flush=True)
# shift TTA
ps = [p0]
for s in [(1,0,0),(-1,0,0),(0,1,0),(0,-1,0),(0,0,1),(0,0,-1)]:
    pr = predict_proba(model, np.ascontiguousarray(np.roll(X, s, axis=(2,3,4))))
    ps.append(np.roll(pr, tuple(-v for v in s), axis=(2,3,4)))
print("shift-tta", D(np.mean(ps, 0)))
