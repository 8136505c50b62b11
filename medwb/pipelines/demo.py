"""The end-to-end study on bundled real data — the README's main job (``medwb demo`` / ``scripts/demo.sh``).

explore (``medwb.pipelines.explore.run_explore``) → active learning, medwb's default pipeline against random picking +
training from scratch, with a simulated annotator
(``medwb.pipelines.simulate.run_simulation``: one study folder per strategy and seed, with full provenance) →
the structure model of that study's pool (``medwb.pipelines.structure.run_structure``: clusters in its cached
SimCLR embedding, and what one naming per cluster would pre-label correctly) →
explanations of the final model with their sanity checks (``medwb.explain.run.run_explain``) → validation
report (``medwb.report.build.build_report``) → ``OUT/index.html`` linking every output.

Each stage is timed; a stage that fails is reported (in the console and on the index page) and the stages
that do not depend on it still run, so one broken part never hides what the others produced. The demo exits
non-zero when any stage failed.
"""
from __future__ import annotations

import html
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from medwb.atomic import ensure_output_dir
from medwb.errors import MedwbError
from medwb.resources import default_demo_data
from medwb.store.layout import StudyLayout, is_study

if TYPE_CHECKING:
    from medwb.al.fit import WarmStart



class DemoError(MedwbError):
    """One or more demo stages failed (each is named in the message and on the index page)."""


@dataclass
class DemoConfig:
    """Sizes of the study. ``full`` is the README's main job (≤ 10 min on 2 cores); ``quick`` is for tests."""

    explore_max_cases: int
    strategies: tuple[str, ...]
    budget: float
    rounds: int
    seeds: int
    epochs: int | None
    max_pool: int | None
    explain_methods: str
    explain_cases: int
    n_bootstrap: int
    pretrain_steps: int | None = None   # SimCLR optimiser steps (None: PretrainConfig's default)
    reference_seeds: int | None = None  # all-labels references for the first N seeds only (None: every seed)
    train: dict[str, float] = field(default_factory=dict)          # TrainConfig overrides of the rounds
    semi_schedule: dict[str, float] = field(default_factory=dict)  # FixMatch overrides (SemiConfig fields)
    parallel: bool = False              # run the simulation's (arm, seed) units in one process per core
    self_train: bool = False            # the medwb arm's rounds also train a self-trained student (off: on the
    #                                     demo's data it lost on the shifted test split, benchmarks/active_learning/
    #                                     pneumonia_demo_self_training)
    warm_start: WarmStart = "auto"      # the loop's default: rounds of 512+ labels continue the last model, so
    #                                     none of the demo's (100 labels; a fixed PASSES continued every round: no
    #                                     gain on the demo's data, benchmarks/active_learning/warm_start/pneumonia)

    @classmethod
    def for_mode(cls, quick: bool) -> DemoConfig:
        if quick:
            return cls(explore_max_cases=200, strategies=("hybrid", "random:scratch"), budget=0.2, rounds=2, seeds=1,
                       epochs=4, max_pool=150, explain_methods="gradcam", explain_cases=4, n_bootstrap=200,
                       pretrain_steps=10)
        # medwb's default pipeline (hybrid: SimCLR on the pool, FixMatch rounds) against random + scratch on a
        # 1000-case pool, 10% in 4 rounds, 2 seeds, in <= 10 minutes on 2 cores. The loop's defaults took ~20
        # minutes here (session 8: a round trains >= 32 batches per epoch, FixMatch then 16 steps of 4x its
        # labelled batch per epoch), so the demo trains shorter rounds, the same for both arms: 10 epochs of
        # >= 16 batches, FixMatch 8 steps per epoch; SimCLR 300 steps; the all-labels references for one seed;
        # the units in one process per core (2 single-thread processes do ~1.5x the work of one 2-thread process)
        return cls(explore_max_cases=2000, strategies=("hybrid", "random:scratch"), budget=0.1, rounds=4, seeds=2,
                   epochs=10, max_pool=1000, explain_methods="gradcam,ig", explain_cases=8,
                   n_bootstrap=1000, pretrain_steps=300, reference_seeds=1, train={"min_batches_per_epoch": 16},
                   semi_schedule={"steps_per_epoch": 8}, parallel=True)


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    ok: bool = False
    error: str = ""
    outputs: list[tuple[str, Path]] = field(default_factory=list)  # (label, path)


def _run(stage: Stage, fn: Callable[[], list[tuple[str, Path]]]) -> Stage:
    t = time.perf_counter()
    print(f"\n== medwb demo: {stage.name} ==", flush=True)
    try:
        stage.outputs = fn()
        stage.ok = True
    except Exception as e:  # noqa: BLE001 - reported on the index page and in the exit status
        stage.error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    stage.seconds = time.perf_counter() - t
    print(f"== {stage.name}: {'done' if stage.ok else 'FAILED'} in {stage.seconds:.0f} s ==", flush=True)
    return stage


def write_headline(sim_dir: Path, strategies: tuple[str, ...], budget: float) -> Path:
    """``SIM/headline.txt``: medwb's default pipeline (the first arm) against what users do without it (the
    last arm, random + scratch): metric at the budget, labels to 98% of all labels and their ratio
    (:func:`medwb.al.curves.compare_arms`), and the auto-labels each arm's models would have accepted at the
    target error with the errors measured against the truth; with a ``max_pool`` simulation, both arms at the
    ``budget`` on the training cases outside the pool (``held_out.csv``), apart from the test split's shift."""
    import pandas as pd

    from medwb.al.curves import compare_arms, format_comparison, summarize
    from medwb.pipelines.simulate import metrics_for, parse_arm, summarize_autolabel

    arm, baseline = parse_arm(strategies[0]).label, parse_arm(strategies[-1]).label
    summary = pd.read_csv(sim_dir / "summary.csv")
    cmp = compare_arms(summary, arm, baseline)
    cmp.to_csv(sim_dir / "headline.csv", index=False)
    lines = [f"medwb's default pipeline ({arm}: SimCLR-pretrained trunk, rounds with FixMatch unless supervised training validates clearly better, {arm} acquisition) "
             f"against {baseline} (random picking, supervised from scratch: what users do without medwb)",
             format_comparison(cmp)]
    auto_csv = sim_dir / "autolabel.csv"
    auto = pd.read_csv(auto_csv) if auto_csv.is_file() else pd.DataFrame()
    if len(auto):
        def share(v: float) -> str:
            return "-" if v != v else f"{v:.1%}"

        for r in summarize_autolabel(auto).itertuples(index=False):
            err = "-" if r.auto_accepted == 0 else f"{r.auto_error:.1%} measured (95% upper bound {r.auto_error_upper95:.1%})"
            lines.append(f"auto-labels, {r.strategy}: {r.auto_accepted} of {r.proposed} proposed "
                         f"cases ({r.coverage:.0%}) confident enough at the 2% target, error {err}; the final model on "
                         f"the rest of the pool: {share(r.pool_coverage)} auto-accepted at {share(r.pool_error)} "
                         f"error, on the test split {share(r.test_coverage)} at {share(r.test_error)}")
    held_csv = sim_dir / "held_out.csv"
    held = pd.read_csv(held_csv) if held_csv.is_file() else pd.DataFrame()
    if len(held):  # the pool left training cases out: what the picks are worth in the pool's own distribution
        held_summary = summarize(held, budget).set_index(["strategy", "metric"])["value_at_budget"]

        def at_budget(name: str) -> str:
            return ", ".join(f"{m.replace('_', ' ')} {held_summary[(name, m)]:.3f}"
                             for m in metrics_for("classification") if (name, m) in held_summary.index)

        lines.append(f"in the pool's own distribution (training cases outside the pool, never trained on; "
                     f"held_out.csv), at the budget: {arm} {at_budget(arm)}; {baseline} {at_budget(baseline)}")
    path = sim_dir / "headline.txt"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return path


def pick_study(sim_dir: Path, strategies: tuple[str, ...]) -> Path:
    """The study the report describes: the first non-random strategy's seed-0 study (else random's)."""
    from medwb.pipelines.simulate import parse_arm, study_folder

    labels = [parse_arm(s).label for s in strategies]
    order = [s for s in labels if not s.startswith("random")] + [s for s in labels if s.startswith("random")]
    for s in order:
        p = study_folder(sim_dir, s, 0)
        if is_study(p):
            return p
    raise DemoError(f"{sim_dir}: the simulation wrote no study folder. Fix: check the simulation stage's error")


def simulate_demo(data: Path, sim_dir: Path, cfg: DemoConfig) -> Path:
    """The demo's simulation (stage 2) with ``cfg``'s sizes, then its headline; returns ``sim_dir/headline.txt``.
    Its own function so that a benchmark of a variant (``dataclasses.replace(cfg, ...)``) runs exactly the demo's."""
    from medwb.compute.cluster import usable_cores
    from medwb.models.pretrain import PretrainConfig
    from medwb.pipelines.simulate import run_simulation

    run_simulation(data, strategies=list(cfg.strategies), budget=cfg.budget, rounds=cfg.rounds, seeds=cfg.seeds,
                   out_dir=sim_dir, epochs=cfg.epochs, max_pool=cfg.max_pool, train=cfg.train,
                   pretrain_config=None if cfg.pretrain_steps is None else PretrainConfig(steps=cfg.pretrain_steps),
                   reference_seeds=cfg.reference_seeds, semi_schedule=cfg.semi_schedule, self_train=cfg.self_train,
                   warm_start=cfg.warm_start,
                   workers=usable_cores() if cfg.parallel else 1)  # run_simulation caps it at its units
    return write_headline(sim_dir, cfg.strategies, cfg.budget)


def run_demo(out_dir: str | Path = "reports", data: str | Path | None = None, quick: bool = False) -> Path:
    """Run the whole study and return the path of ``OUT/index.html`` (see the module doc)."""
    os.environ["MEDWB_OFFLINE"] = "1"
    from medwb.offline import install_guard

    install_guard()  # this process too, not only the papermill kernels
    cfg = DemoConfig.for_mode(quick)
    out = ensure_output_dir(Path(out_dir).resolve())
    data = Path(data).resolve() if data else default_demo_data()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    print(f"medwb demo ({'quick' if quick else 'full'}) on {data} -> {out}", flush=True)
    stages: list[Stage] = []

    def explore() -> list[tuple[str, Path]]:
        from medwb.pipelines.explore import run_explore

        ipynb, page = run_explore(data, out / "explore", max_cases=cfg.explore_max_cases)
        return [("exploration report (HTML)", page), ("exploration notebook (executed)", ipynb)]

    stages.append(_run(Stage("1. explore the data"), explore))

    sim_dir = out / "simulation"

    def simulate() -> list[tuple[str, Path]]:
        simulate_demo(data, sim_dir, cfg)
        outs = [("learning curves (PNG)", sim_dir / "curves.png"), ("curves table (CSV)", sim_dir / "curves.csv"),
                ("summary table (CSV)", sim_dir / "summary.csv"), ("medwb against random + scratch (text)",
                                                                    sim_dir / "headline.txt")]
        return [(k, p) for k, p in outs if p.exists()]

    sim = _run(Stage("2. active learning: medwb against random + scratch (simulated annotator)"), simulate)
    stages.append(sim)

    study: Path | None = None
    explain_dir: Path | None = None
    if sim.ok:
        study = pick_study(sim_dir, cfg.strategies)
        explain_dir = StudyLayout(study).explain_exports
        structure_study = study

        def structure() -> list[tuple[str, Path]]:
            from medwb.models.pretrain import PretrainConfig
            from medwb.pipelines.structure import format_structure, run_structure

            sdir = out / "structure"
            # the study's own pool and cached SimCLR trunk: clustering it costs an embedding pass, not a pretraining
            res = run_structure(data, sdir, study_dir=structure_study, max_pool=cfg.max_pool, progress=False,
                                cache_dir=sim_dir,
                                config=None if cfg.pretrain_steps is None else PretrainConfig(steps=cfg.pretrain_steps))
            text = format_structure(res)
            print(text)
            (sdir / "structure.txt").write_text(text + "\n")
            outs = [("structure model summary (text)", sdir / "structure.txt"),
                    ("clusters of the pool (CSV)", sdir / "clusters.csv"),
                    ("clusters' size, spread, typical members (CSV)", sdir / "clusters_summary.csv"),
                    ("pre-labels from one naming per cluster, against the truth (JSON)", sdir / "structure_eval.json")]
            return [(k, p) for k, p in outs if p.exists()]

        stages.append(_run(Stage("2b. structure model before any label: clusters of the pool in the SimCLR "
                                 "embedding"), structure))

        def explain() -> list[tuple[str, Path]]:
            from medwb.explain.run import run_explain

            run_explain(study, data, method=cfg.explain_methods, cases=cfg.explain_cases, out_dir=explain_dir)
            grids = sorted((explain_dir / "overlays").glob("*.png"))
            return [(f"explanation overlays: {p.stem}", p) for p in grids] + \
                [("sanity checks (CSV)", explain_dir / "checks.csv")]

        stages.append(_run(Stage("3. explanations with sanity checks"), explain))

        def report() -> list[tuple[str, Path]]:
            from medwb.report.build import build_report

            paths = build_report(study, out / "validation", pdf=True, dataset=data,
                                 simulation_curves=sim_dir / "curves.csv",
                                 explain_dir=explain_dir if explain_dir.is_dir() else None,
                                 n_bootstrap=cfg.n_bootstrap, seed=0)
            labels = {".html": "validation report (HTML)", ".pdf": "validation report (PDF)",
                      ".ipynb": "validation notebook (executed)"}
            figs = [(f"validation figure: {p.stem}", p) for p in sorted((out / "validation" / "figures").glob("*.png"))]
            return [(labels[p.suffix], p) for p in paths] + \
                [("metric tables (CSV folder)", out / "validation" / "tables")] + figs

        stages.append(_run(Stage("4. validation report"), report))
    else:
        for name in ("2b. structure model before any label: clusters of the pool in the SimCLR embedding",
                     "3. explanations with sanity checks", "4. validation report"):
            stages.append(Stage(name, error="skipped: needs the simulation's study folder"))

    total = time.perf_counter() - t0
    index = write_index(out, stages, data=data, study=study, quick=quick, started=started, total_s=total)
    (out / "demo_timings.json").write_text(json.dumps(
        {"quick": quick, "data": str(data), "total_s": round(total, 1),
         "stages": {s.name: {"seconds": round(s.seconds, 1), "ok": s.ok, "error": s.error} for s in stages}},
        indent=1))
    print("\n" + "\n".join(f"  {'ok ' if s.ok else 'FAIL'} {s.seconds:6.0f} s  {s.name}" + (f"  ({s.error})" if s.error else "")
                           for s in stages))
    report = next((p for s in stages for k, p in s.outputs if k == "validation report (HTML)"), None)
    print(f"\nTotal {total:.0f} s. Index of every report: {index}")
    if report:
        print(f"Validation report: {report}\n                   {report.with_suffix('.pdf')}")
    failed = [s.name for s in stages if not s.ok]
    if failed:
        raise DemoError(f"stage(s) failed: {'; '.join(failed)}. Fix: see the errors above and in {index}")
    return index


def write_index(out: Path, stages: list[Stage], *, data: Path, study: Path | None, quick: bool, started: datetime,
                total_s: float) -> Path:
    """``OUT/index.html``: a static page (no script, no external address) linking every produced report."""
    def link(p: Path) -> str:
        rel = os.path.relpath(p, out)
        return f'<a href="{html.escape(rel)}">{html.escape(rel)}</a>'

    rows = []
    for s in stages:
        status = "done" if s.ok else "FAILED" if s.error and not s.error.startswith("skipped") else "skipped"
        items = "".join(f"<li>{html.escape(k)}: {link(p)}</li>" for k, p in s.outputs if p.exists())
        err = f'<p class="err">{html.escape(s.error)}</p>' if s.error else ""
        rows.append(f"<section><h2>{html.escape(s.name)} <small>({status}, {s.seconds:.0f} s)</small></h2>"
                    f"{err}<ul>{items}</ul></section>")
    thumbs = "".join(f'<figure><a href="{html.escape(os.path.relpath(p, out))}"><img src="'
                     f'{html.escape(os.path.relpath(p, out))}" alt="{html.escape(k)}"></a><figcaption>{html.escape(k)}'
                     "</figcaption></figure>"
                     for s in stages for k, p in s.outputs if p.suffix == ".png" and p.exists())
    head_txt = next((p for s in stages for k, p in s.outputs if p.name == "headline.txt" and p.exists()), None)
    headline = ("" if head_txt is None else
                f"<h2>Headline: medwb against random + scratch</h2><pre>{html.escape(head_txt.read_text())}</pre>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medwb demo: reports</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}small{{color:#666}}
.err{{color:#b00}}figure{{display:inline-block;margin:.5em;width:28em;vertical-align:top}}
figure img{{width:100%;border:1px solid #ccc}}code{{background:#f4f4f4}}</style></head><body>
<h1>medwb demo: every report of this run</h1>
<p>Dataset <code>{html.escape(str(data.name))}</code>; mode {'quick (tests)' if quick else 'full'}; study
<code>{html.escape(os.path.relpath(study, out) if study else 'none')}</code>; started {started:%Y-%m-%d %H:%M} UTC;
total {total_s:.0f} s. Everything here was computed offline on this machine.</p>
{''.join(rows)}
{headline}<h2>Figures</h2>{thumbs}
</body></html>
"""
    p = out / "index.html"
    p.write_text(page, encoding="utf-8")
    return p
