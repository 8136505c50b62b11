"""The demo's simulation (DemoConfig full) with self_train on: its time and headline against the default."""
import sys, time
from pathlib import Path
from medwb.pipelines.demo import DemoConfig, write_headline
from medwb.resources import default_demo_data
from medwb.pipelines.simulate import run_simulation
from medwb.models.pretrain import PretrainConfig
if __name__ == "__main__":
    cfg = DemoConfig.for_mode(False)
    out = Path(sys.argv[1]); seeds = int(sys.argv[2]) if len(sys.argv) > 2 else cfg.seeds
    t = time.perf_counter()
    run_simulation(default_demo_data(), strategies=list(cfg.strategies), budget=cfg.budget, rounds=cfg.rounds, seeds=seeds,
                   out_dir=out, epochs=cfg.epochs, max_pool=cfg.max_pool, train=cfg.train,
                   pretrain_config=PretrainConfig(steps=cfg.pretrain_steps), reference_seeds=cfg.reference_seeds,
                   semi_schedule=cfg.semi_schedule, workers=2, self_train=True, progress=False)
    write_headline(out, cfg.strategies, cfg.budget)
    print(f"simulation {time.perf_counter() - t:.0f} s")
    print((out / "headline.txt").read_text())
