"""Test balanced accuracy of binary threshold rules on the probabilities dump_probs.py wrote (see results.txt)."""
import numpy as np

from medwb.metrics import balanced_accuracy as ba
d = np.load("/tmp/probs.npz"); yv, yt = d["yv"], d["yt"]
def cands(s):
    u = np.unique(s); return np.unique(np.concatenate([[0.5], (u[1:] + u[:-1]) / 2]))
def bals(s, y, c):
    return (((s[y == 1][None] >= c[:, None]).mean(1)) + ((s[y == 0][None] < c[:, None]).mean(1))) / 2
def B(s, y):
    c = cands(s); b = bals(s, y, c); best = np.flatnonzero(b >= b.max() - 1e-12); return c[best[np.argmin(abs(c[best] - .5))]]
def C(s, y):
    c = cands(s); b = bals(s, y, c); best = np.flatnonzero(b >= b.max() - 1e-12); return np.median(c[best])
def Dm(s, y):  # move only if improves by >= 1 minority case
    c = cands(s); b = bals(s, y, c); base = bals(s, y, np.array([0.5]))[0]
    if b.max() - base < 0.5 / min((y == 0).sum(), (y == 1).sum()) - 1e-12: return 0.5
    return B(s, y)
def L(s, y):  # logit-space: midpoint-of-plateau in logit
    z = np.log(np.clip(s, 1e-7, 1 - 1e-7) / np.clip(1 - s, 1e-7, 1)); c = cands(s); b = bals(s, y, c)
    best = np.flatnonzero(b >= b.max() - 1e-12); zc = np.log(np.clip(c[best],1e-7,1-1e-7)/np.clip(1-c[best],1e-7,1))
    zt = np.median(zc); return 1 / (1 + np.exp(-zt))
keys = sorted({k.rsplit("_", 1)[0] for k in d if k.endswith("_val")})
groups = {}
for k in keys:
    size_sel = k.rsplit("_", 1)[0]
    pv, pt = d[k + "_val"][:, 1], d[k + "_test"][:, 1]
    r = [ba(yt, pt >= 0.5)] + [ba(yt, pt >= f(pv, yv)) for f in (B, C, Dm, L)]
    groups.setdefault(size_sel, []).append(r)
for g, rs in groups.items():
    a = np.array(rs); print(g, len(rs), " ".join(f"{m:.3f}[{n:.3f}]" for m, n in zip(a.mean(0), a.min(0))))
print("cols: argmax, B nearest0.5, C median, D move-if-gain, L logit-median")
