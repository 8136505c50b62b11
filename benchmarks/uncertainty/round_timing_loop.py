"""Time one round of medwb's default loop on a whole pool (issue 12: one round <= 60 s on 2 cores).

    python benchmarks/uncertainty/round_timing_loop.py [--data PATH] [--labels 470] [--seed 0] [--out FILE.md]
        [--cache DIR]

``--data``: the bundled PneumoniaMNIST unless given (e.g. the HC18 subset with ``--labels 9``: a 2D segmentation
round, whose default is no pretraining, hybrid after a random first batch, and a self-trained student).

What a round is here: the loop's own calls, timed from outside. A study on the bundled PneumoniaMNIST (pool 4708,
validation 524, test 624) with the default pipeline (``ActiveLearningLoop`` defaults: SimCLR trunk pretrained on
the pool and cached in the study, hybrid acquisition, rounds that train supervised and FixMatch from the trunk
and keep the better on validation, T = 20 MC-dropout scoring of the whole unlabelled pool, auto-label
proposals). Round 1 is the cold start: ``--labels`` cases (10% by default) chosen in the pretrained embedding
and labelled by the simulated oracle. Then, timed:

- **train**: ``complete()`` of round 1 (both candidates trained, validated, the chosen one registered);
- **propose**: ``propose()`` of round 2 (score the 4.2k unlabelled cases, hybrid selection of the next
  ``--labels``, auto-label bookkeeping);

round = train + propose, which is what a person waits for between two batches. ``--first N`` makes round 1 the cold
start of N cases and times round 2 instead (its ``complete()`` on all ``--labels`` cases, the ``--labels`` - N
added by hybrid, then round 3's ``propose()``): the round the loop's ``warm_start`` changes, so
``--warm-start auto`` (the default) or ``PASSES`` against ``off`` is an A/B on the same labelled set (round 1 trains from the start either way). Pretraining happens once per
study (reported apart, it is not part of a round). Wall seconds and this process's CPU seconds, with the torch
threads the machine gives (2 on the target machine).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MEDWB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]

from medwb.cli import parse_train_setting, parse_warm_start  # noqa: E402  (--train, --warm-start as medwb simulate)


def emit(lines: list[str], out: str | None) -> None:
    """Print a result table's markdown lines and, with ``out``, write them there (this script's and
    ``bench_seg_scoring.py``'s results)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data_samples" / "classification_2d" / "pneumoniamnist.npz")
    ap.add_argument("--labels", type=int, default=470)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", type=Path, default=None,
                    help="a simulation's OUT/cache: its pretrained trunks are copied into the study, so one for "
                         "this pool and config is read instead of trained (default: pretrain)")
    ap.add_argument("--no-semi", action="store_true",
                    help="train the supervised candidate alone (semi=False), as the loop's rounds do once FixMatch "
                         "has lost on validation (fixmatch_still_ahead)")
    ap.add_argument("--first", type=int, default=None, metavar="N",
                    help="round 1 labels N cases and round 2 is timed (see above)")
    ap.add_argument("--warm-start", type=parse_warm_start, default="auto", metavar="PASSES|auto|off",
                    help="the loop's warm_start (its default auto): round 2 continues round 1's model for PASSES "
                         "passes, where auto does, or never (off); only with --first")
    ap.add_argument("--train", type=parse_train_setting, action="append", default=[], metavar="KEY=VALUE",
                    help="a TrainConfig field of the loop's schedule, as medwb simulate --train (e.g. precision=fp32)")
    a = ap.parse_args()
    if isinstance(a.warm_start, int) and a.first is None:
        ap.error("--warm-start PASSES needs --first: the first round always trains from the start")
    if a.first is not None and not 0 < a.first < a.labels:
        ap.error("--first must be between 0 and --labels")
    import torch

    from medwb.al.loop import ActiveLearningLoop
    from medwb.models import default_train_config
    from medwb.al.oracle import simulated_oracle
    from medwb.data import open_dataset
    from medwb.store import Study
    from medwb.store.layout import PRETRAIN

    data = a.data
    with tempfile.TemporaryDirectory(prefix="medwb-round-timing-") as tmp:
        os.environ["MEDWB_CACHE"] = str(Path(tmp) / "cache")
        ds = open_dataset(data, progress=False)
        study = Study.create(Path(tmp) / "study", dataset_path=str(data), task=ds.task, classes=ds.classes,
                             name="round timing", key=False)
        config = default_train_config(ds.task, seed=a.seed, modality=ds.modality, spatial_dims=ds.ndim, **dict(a.train))
        loop = ActiveLearningLoop(study, ds, batch_size=a.first or a.labels, seed=a.seed, evaluate_test=True,
                                  progress=False, semi=False if a.no_semi else None, warm_start=a.warm_start,
                                  train_config=config)
        trunks = study.layout.cache / PRETRAIN  # where the loop looks for a finished trunk of its pool and config
        copied: set[Path] = set()
        for done in sorted(a.cache.glob(f"{PRETRAIN}/*.pt")) if a.cache else []:
            if not done.name.endswith(".partial.pt"):  # finished trunks only
                trunks.mkdir(parents=True, exist_ok=True)
                copied.add(Path(shutil.copy(done, trunks / done.name)))
        oracle = simulated_oracle(ds)
        t = {}
        w, c = clock()
        loop.representation()
        t["pretrain"] = clock()
        read = bool(copied) and set(trunks.glob("*.pt")) <= copied  # no trunk written: one was read
        batch = loop.commit_auto(loop.propose())
        t["cold start"] = clock()
        for row in batch.itertuples(index=False):
            loop.save_label(str(row.case_id), oracle(str(row.case_id), None))
        t["labels"] = clock()
        result = loop.complete()
        t["train" if a.first is None else "round 1 train"] = clock()
        if a.first is not None:  # round 2 is the timed one: label hybrid's picks, then retrain on all of them
            loop.batch_size = a.labels - a.first
            batch = loop.commit_auto(loop.propose())
            for row in batch.itertuples(index=False):
                loop.save_label(str(row.case_id), oracle(str(row.case_id), None))
            t["round 2 picks"] = clock()
            first_metrics, result = result.metrics, loop.complete()
            t["train"] = clock()
        loop.propose()
        t["propose"] = clock()
        marks = [("start", (w, c))] + list(t.items())
        spans = {name: (now[0] - before[0], now[1] - before[1])
                 for (_, before), (name, now) in zip(marks, marks[1:])}
    m = result.metrics
    later = "round 2's" if a.first is not None else "round 1's"
    pretrain_row = "pretraining (read from --cache)" if read else "pretraining (once per study)"
    rows = [(pretrain_row, *spans["pretrain"]), ("cold-start batch", *spans["cold start"]),
            *([("round 1 from the start (complete), then round 2's picks",
                spans["round 1 train"][0] + spans["round 2 picks"][0],
                spans["round 1 train"][1] + spans["round 2 picks"][1])]
              if a.first is not None else []),
            (f"train ({later} complete)", *spans["train"]),
            (f"score + select ({'round 3' if a.first is not None else 'round 2'}'s propose)", *spans["propose"]),
            ("**round = train + score + select**", spans["train"][0] + spans["propose"][0],
             spans["train"][1] + spans["propose"][1])]
    data_arg = "" if a.data == ap.get_default("data") else f"--data DATA_ROOT/.../{a.data.name} "
    data_arg += ("" if a.cache is None else "--cache OUT/cache ") + ("--no-semi " if a.no_semi else "")
    data_arg += ("" if a.first is None else f"--first {a.first} ")
    data_arg += ("" if a.first is None or a.warm_start == "auto" else f"--warm-start {a.warm_start or 'off'} ")
    data_arg += "".join(f"--train {k}={v} " for k, v in a.train)
    lines = [f"# One round of the default loop, {ds.name} whole pool", "",
             f"Command: `python benchmarks/uncertainty/round_timing_loop.py {data_arg}--labels {a.labels} "
             f"--seed {a.seed}`", "",
             f"torch threads {torch.get_num_threads()}, usable cores {len(os.sched_getaffinity(0))}, "
             f"load average before {os.getloadavg()[0]:.1f}; pool {loop.pool_size}, {m.get('n_labeled')} labels; "
             f"training steps in {loop.train_config.precision}; "
             f"CPU {torch.backends.cpu.get_cpu_capability()} kernels (a shared host's CPU can change between runs, "
             "and with it the kernels and the floats).", "",
             "| step | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, wall, cpu in rows]
    if ds.task == "segmentation":
        lines += ["", f"Round 1's model: self-trained student kept = {bool(m.get('self_trained'))}, best epoch "
                  f"{m.get('best_epoch')}, train_seconds (teacher + student) {m.get('train_seconds', 0):.1f}; test Dice "
                  f"{m.get('test_dice', float('nan')):.4f}."]
    else:
        if a.first is not None:
            lines += ["", f"Round 1 (from the start, {first_metrics.get('n_labeled')} labels): test accuracy "
                      f"{first_metrics.get('test_accuracy', float('nan')):.4f}; round 2 warm start = "
                      f"{bool(m.get('warm_start'))} ({m.get('warm_passes', '-')} passes)."]
        lines += ["", f"{later.capitalize()} model: FixMatch kept = {bool(m.get('semi'))}, validation score supervised "
                  f"{m.get('val_score_supervised', float('nan')):.4f} / FixMatch "
                  f"{m.get('val_score_semi', float('nan')):.4f}, best epoch {m.get('best_epoch')}, train_seconds (both "
                  f"candidates) {m.get('train_seconds', 0):.1f}; test AUC {m.get('test_auc', float('nan')):.4f}, "
                  f"accuracy {m.get('test_accuracy', float('nan')):.4f}."]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
