"""Session-21 probe (see README.md here): run as its README says; numbers there."""
import sys, time
import numpy as np
from pathlib import Path
from medwb.al.fit import fit_round
from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config, predict_proba
H = sys.argv[1]; seed = int(sys.argv[2]); n = int(sys.argv[3]); out = Path(sys.argv[4])
ds = open_dataset(H, progress=False)
inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), (32, 48, 32))
(Xp, yp, _), val, test = inputs["train"], inputs["val"][:2], inputs["test"][:2]
lab = np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False)) if n < len(Xp) else np.arange(len(Xp))
config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
model = build_for_dataset(ds, seed=seed)
t0 = time.perf_counter()
model, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config, semi=False, test=test, progress=False)
print(seed, n, m.get("test_dice"), time.perf_counter() - t0, flush=True)
np.savez_compressed(out / f"probs_s{seed}_n{n}.npz", val=predict_proba(model, val[0]).astype(np.float16), yval=val[1],
                    test=predict_proba(model, test[0]).astype(np.float16), ytest=test[1])
