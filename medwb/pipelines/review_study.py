"""``medwb review STUDY --readers … --rounds N``: the researcher's side of the review app, with no notebook.

Why: without it, retraining after the readers finished a round is a notebook cell the researcher must know to
rerun (issue 14, item 8). With ``--rounds``, the command that serves the app also runs the rounds: it proposes a
round, waits until the store says the readers decided it (:func:`medwb.al.review_rounds.run_review_rounds`),
retrains, and proposes the next; the readers' open pages continue into the new round by themselves. The loop is
built from the study alone (its dataset path, task and classes), so the same study can be continued later from
notebook 02 or another ``medwb review``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from medwb.al.loop import ActiveLearningLoop
from medwb.al.review_rounds import run_review_rounds
from medwb.errors import ConfigError
from medwb.store import Study


def loop_for_study(study: Study, *, arm: str = "hybrid", batch_size: int = 32, data: str | Path | None = None,
                   seed: int = 0, progress: bool = True, prelabel: str | None = None) -> ActiveLearningLoop:
    """The active-learning loop of ``study`` on its own dataset (or ``data``, when the dataset moved).

    ``arm`` is ``STRATEGY[:PIPELINE]`` as in ``medwb simulate`` (``hybrid`` = medwb's default pipeline,
    ``entropy:scratch`` = supervised from scratch, no pretraining). ``prelabel``: the first round's label-free
    pre-label masks (2D segmentation, "ellipse" or "vessels")."""
    from medwb.data import open_dataset
    from medwb.pipelines.simulate import parse_arm

    a = parse_arm(arm)
    path = Path(data) if data is not None else Path(study.dataset_path)
    if not path.exists():
        raise ConfigError(f"{study.folder}: its dataset {path} is not there. Fix: pass --data with the dataset's "
                          "current location")
    ds = open_dataset(path, progress=progress)
    return ActiveLearningLoop(study, ds, strategy=a.strategy, batch_size=batch_size, seed=seed, progress=progress,
                              pretrain=a.pretrain, semi=a.semi, prelabel=prelabel)


class RoundProgress:
    """``on_wait`` for :func:`run_review_rounds`: one line each time the open round's count of decided cases
    changes (not one per poll), so the researcher's terminal shows the readers' progress."""

    def __init__(self, say: Callable[[str], None] = print) -> None:
        self.say = say
        self.last: tuple[int, int, int] | None = None

    def __call__(self, study: Study) -> None:
        number = study.open_round()
        if number is None:
            return
        st = study.case_status(number)
        now = (number, int(st["decided"].sum()), len(st))
        if now != self.last:
            self.last = now
            self.say(f"round {now[0]}: {now[1]} of {now[2]} cases decided")


def run_rounds(loop: ActiveLearningLoop, *, rounds: int, double_reads: int = 0, poll_seconds: float = 5.0,
               say: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the study to ``rounds`` finished rounds as the readers decide; one line per round closed."""
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds}: give the number of rounds the study should reach (>= 1)")
    if loop.finished_rounds() >= rounds:
        say(f"the study already has {loop.finished_rounds()} finished rounds (asked for {rounds})")
        return pd.DataFrame()
    say(f"running rounds to {rounds}: each round is retrained when its readers decided it")

    def closed(row: dict) -> None:
        metrics = ", ".join(f"{k[4:]} {v:.3f}" for k, v in row.items() if k.startswith("val_") and pd.notna(v))
        say(f"round {int(row['round'])} closed: {int(row['n_labeled'])} labels, model retrained "
            f"({metrics or 'no metric'}); the next round opens for the readers")

    return run_review_rounds(loop, rounds=rounds, double_reads=double_reads, poll_seconds=poll_seconds,
                             on_wait=RoundProgress(say), on_round=closed)


__all__ = ["RoundProgress", "loop_for_study", "run_rounds"]
