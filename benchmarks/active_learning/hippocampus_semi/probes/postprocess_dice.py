"""Session-21 probe (see README.md here): run as its README says; numbers there."""
import glob, sys, numpy as np, torch
from monai.transforms import KeepLargestConnectedComponent
from medwb.metrics import dice
def masks(p): return p.astype(np.float32).argmax(1)
def pp(m, mode):
    if mode == "none": return m
    out = []
    for x in m:
        t = torch.from_numpy(x[None].astype(np.int64))
        if mode == "union": k = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=False, connectivity=3)
        elif mode == "perclass": k = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=True, connectivity=3)
        elif mode == "union+per": 
            t = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=False, connectivity=3)(t)
            k = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=True, connectivity=3)
        out.append(np.asarray(k(t))[0])
    return np.stack(out)
def D(a, y): return np.mean([dice(a[i], y[i, 0], n_classes=3) for i in range(len(a))])
for f in sorted(glob.glob(sys.argv[1] + "/probs_*.npz")):
    z = np.load(f)
    r = {}
    for split in ("val", "test"):
        m = masks(z[split]); y = z["y" + split]
        r[split] = {mode: round(D(pp(m, mode), y), 4) for mode in ("none", "union", "perclass", "union+per")}
    print(f.split("/")[-1], r)
