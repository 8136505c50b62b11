"""`medwb demo --quick`: the whole study end to end on bundled PneumoniaMNIST, as the README's main job runs it."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from medwb.notebook_runner import external_urls


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "reports"
    r = subprocess.run([sys.executable, "-m", "medwb.cli", "demo", "--out", str(out), "--quick"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"Index of every report: {out / 'index.html'}" in r.stdout
    timings = json.loads((out / "demo_timings.json").read_text())
    assert all(s["ok"] for s in timings["stages"].values()), timings
    index = (out / "index.html").read_text()
    assert external_urls(index) == [] and "<script" not in index
    links = re.findall(r'href="([^"]+)"', index)
    for must in ("explore/", "simulation/curves.png", "validation/validation_report.html",
                 "validation/validation_report.pdf", "overlays/gradcam.png"):
        assert any(must in link for link in links), must
    for link in links:
        assert (out / link).exists(), link  # every link resolves
    v = out / "validation"
    html = (v / "validation_report.html").read_text()
    assert external_urls(html) == []
    curves = pd.read_csv(out / "simulation" / "curves.csv")
    assert {"random", "hybrid", "full"} <= set(curves["strategy"])
    lc = pd.read_csv(v / "tables" / "learning_curves.csv")
    assert {"random", "hybrid", "full"} <= set(lc["strategy"])  # the report shows AL against random
    m = pd.read_csv(v / "tables" / "metrics.csv")
    auc = m[m["metric"] == "auc"]["estimate"].item()
    # the report evaluates the hybrid study's last model on the whole test split: the same AUC the loop recorded
    last = curves[(curves["strategy"] == "hybrid") & (curves["metric"] == "auc")].sort_values("round").iloc[-1]
    assert auc == pytest.approx(last["value"], abs=1e-4)
    assert (m["n"] == 624).all()
    checks = pd.read_csv(v / "tables" / "xai_checks.csv")
    assert {"randomization"} <= set(checks["check"])
    src = pd.read_csv(v / "tables" / "label_sources.csv")
    assert src["labels"].sum() > 0
