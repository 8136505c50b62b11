"""The demo's configuration: the main job's sizes, and variants of it that benchmarks run through the same call."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medwb.pipelines import demo, simulate


def test_demo_variant_reaches_the_simulation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """benchmarks/active_learning/demo_variant.py measures an opt-in option with the demo's exact sizes: the
    option must reach run_simulation, and the main job itself must keep the loop's defaults (self-training off,
    the warm start "auto": no demo round reaches its 512 labels)."""
    seen: dict[str, object] = {}
    monkeypatch.setattr(simulate, "run_simulation", lambda data, **kw: seen.update(kw))
    monkeypatch.setattr(demo, "write_headline", lambda sim_dir, strategies, budget: sim_dir / "headline.txt")
    full = demo.DemoConfig.for_mode(False)
    assert full.warm_start == "auto" and full.self_train is False  # on every round: no gain on the demo's data
    demo.simulate_demo(tmp_path / "d.npz", tmp_path, replace(full, warm_start=40, self_train=True))
    assert seen["warm_start"] == 40 and seen["self_train"] is True
    assert seen["max_pool"] == full.max_pool and seen["rounds"] == full.rounds and seen["seeds"] == full.seeds
