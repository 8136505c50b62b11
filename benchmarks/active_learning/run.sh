#!/usr/bin/env bash
# The exact commands that produced the committed results (run from the repository root, venv active).
# Each writes DIR/{curves.csv,summary.csv,curves.png,table.txt}; the console log goes to DIR.log.
# Studies go to DIR/studies/ (not committed); re-running resumes them instead of retraining.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
B=benchmarks/active_learning

case "${1:-all}" in
pneumonia|all)
  # The three seeds run as parallel processes on one out dir (python API, seeds=[k]); the CLI command then
  # reads the finished studies back (nothing is retrained) and writes curves/summary/table for all seeds.
  for k in 0 1 2; do
    python -c "from medwb.pipelines.simulate import run_simulation as r; r('data_samples/classification_2d/pneumoniamnist.npz', \
      strategies=['random', 'entropy', 'hybrid', 'bald', 'coreset', 'badge'], budget=0.1, rounds=5, seeds=[$k], epochs=6, \
      out_dir='$B/pneumoniamnist')" > /dev/null 2>&1 &
  done
  wait
  medwb simulate data_samples/classification_2d/pneumoniamnist.npz \
    --strategy random --strategy entropy --strategy hybrid --strategy bald --strategy coreset --strategy badge \
    --budget 0.1 --rounds 5 --seeds 3 --epochs 6 --out $B/pneumoniamnist 2>&1 | tee $B/pneumoniamnist.log ;;&
adrenal|all)
  # The whole 1188-volume pool, 10% in 5 rounds. Schedule: at most 15 epochs of at least 8 batches (so 24
  # labels get as many steps per epoch as 256), best epoch by validation loss (validation AUC picked epochs that
  # predicted the minority class for ~every case: accuracy 0.24), early stopping after 6 stale epochs.
  for k in 0 1 2; do
    python -c "from medwb.pipelines.simulate import run_simulation as r; r('data_samples/classification_3d/adrenalmnist3d.npz', \
      strategies=['random', 'entropy', 'hybrid'], budget=0.1, rounds=5, seeds=[$k], epochs=15, \
      train={'min_batches_per_epoch': 8, 'patience': 6, 'select_on': 'loss'}, out_dir='$B/adrenalmnist3d')" > /dev/null 2>&1 &
  done
  wait
  medwb simulate data_samples/classification_3d/adrenalmnist3d.npz --strategy random --strategy entropy \
    --strategy hybrid --budget 0.1 --rounds 5 --seeds 3 --epochs 15 --train min_batches_per_epoch=8 \
    --train patience=6 --train select_on=loss --out $B/adrenalmnist3d 2>&1 | tee $B/adrenalmnist3d.log ;;&
hippocampus|all)
  # All 260 labelled MSD Task04 volumes from the shared data folder (only 60 are bundled): pool 169 / val 39 /
  # test 52 (carved, fixed seed), resized to 32x48x32; 20% in 5 rounds of 7 volumes. Segmentation schedule
  # (default_train_config): batches of 8, at least 8 batches per epoch; here at most 10 epochs.
  # Seeds run as parallel processes, then one call reads the finished studies back.
  H=${MEDWB_HIPPOCAMPUS:-../shared/data/seg3d/msd_task04_hippocampus}
  for k in 0 1 2; do
    python -c "from medwb.pipelines.simulate import run_simulation as r; r('$H', \
      strategies=['random', 'entropy', 'hybrid'], budget=0.2, rounds=5, seeds=[$k], epochs=10, size=(32, 48, 32), \
      out_dir='$B/hippocampus')" > /dev/null 2>&1 &
  done
  wait
  medwb simulate "$H" --strategy random --strategy entropy --strategy hybrid \
    --budget 0.2 --rounds 5 --seeds 3 --epochs 10 --size 32x48x32 --out $B/hippocampus 2>&1 | tee $B/hippocampus.log ;;

pneumonia-medwb)
  # Issue 12: medwb's default pipeline (SimCLR on the pool once, FixMatch rounds from the pretrained trunk) with
  # hybrid and with random acquisition, against random + supervised from scratch; the whole 4708-case pool,
  # 10% in 5 rounds, 3 seeds, the default schedules (no --epochs). One process; the committed run used 1 thread
  # (63 min) beside other work; 2 threads on an idle machine are faster.
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} medwb simulate data_samples/classification_2d/pneumoniamnist.npz \
    --strategy hybrid --strategy random --strategy random:scratch \
    --budget 0.1 --rounds 5 --seeds 3 --out $B/pneumonia_medwb 2>&1 | tee $B/pneumonia_medwb.log ;;
adrenal-medwb)
  # Issue 12's 3D target: medwb's default pipeline (3D SimCLR, random first batch in 3D, hybrid, fine-tuning from
  # the trunk) against random on the same pipeline and random + scratch; whole pool, 10% in 5 rounds, 3 seeds,
  # all-labels references on seed 0 only (about 75 min at 1 thread).
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} medwb simulate data_samples/classification_3d/adrenalmnist3d.npz \
    --strategy hybrid --strategy random --strategy random:scratch --budget 0.1 --rounds 5 --seeds 3 \
    --reference-seeds 1 --quiet --out $B/adrenalmnist3d_medwb 2>&1 | tee $B/adrenalmnist3d_medwb.log ;;
hippocampus-medwb)
  # Issue 12's hippocampus target, first look: the 10% point only (one round: the first batch of 17 volumes),
  # medwb's default (UNet trunk pretrained with SimCLR on the pool, cold start in its embedding) against a random
  # first batch on the same pipeline and random + scratch; 3 seeds, references on seed 0. Committed twice:
  # hippocampus_medwb/ (narrow UNet 8-16-32-64, ~70 min at 1 thread) and hippocampus_medwb_wide/ (the default
  # 16-32-64-128 since session 21, arms hybrid and random:scratch, --workers 2: ~33 min on 2 cores).
  H=${MEDWB_HIPPOCAMPUS:-../shared/data/seg3d/msd_task04_hippocampus}
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} medwb simulate "$H" --strategy hybrid --strategy random \
    --strategy random:scratch --budget 0.1 --rounds 1 --seeds 3 --reference-seeds 1 --size 32x48x32 --quiet \
    --out $B/hippocampus_medwb 2>&1 | tee $B/hippocampus_medwb.log ;;
hippocampus-semi)
  # Issue 12, segmentation's semi-supervised candidate: supervised vs mean-teacher training on fixed random label
  # sets of 17 hippocampus volumes (10% of the pool), 3 seeds, then the variants of the session-19 README
  # (~3 min per supervised run, 6-9 min per mean-teacher run at 1 thread).
  H=${MEDWB_HIPPOCAMPUS:-../shared/data/seg3d/msd_task04_hippocampus}
  OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py "$H" $B/hippocampus_semi --seeds 0 1 2 \
    --recipes supervised mean-teacher
  OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py "$H" $B/hippocampus_semi --seeds 0 1 2 \
    --recipes supervised --train-config '{"augment": "intensity"}' --tag /intensity
  for v in 'plainCE {"balance_pseudo": false}' 'plainCE+l0.3+t0.95 {"balance_pseudo": false, "lambda_u": 0.3, "threshold": 0.95}' \
           'ema97+cutmix+full {"ema_decay": 0.97, "cutmix": true, "patience": 40}' \
           'ema97+cutmix+full+plainCE {"ema_decay": 0.97, "cutmix": true, "patience": 40, "balance_pseudo": false}'; do
    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py "$H" $B/hippocampus_semi --seeds 0 \
      --recipes mean-teacher --semi-schedule "${v#* }" --tag "/${v%% *}"
  done
  OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py "$H" $B/hippocampus_semi --seeds 0 \
    --recipes mean-teacher --train-config '{"augment": "intensity"}' --semi-schedule '{"balance_pseudo": false}' \
    --tag /intensity+plainCE
  OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_semi.py "$H" $B/hippocampus_semi --seeds 0 1 2 \
    --recipes supervised --train-config '{"epochs": 80, "patience": 16}' --tag /80ep+p16 ;;
blood-classes)
  # Issue 12: labels needed vs number of classes on BloodMNIST (8 classes; not bundled: MEDWB_BLOODMNIST, default
  # the shared data folder): nested subsets of 2/4/6/8 classes, each a 1000-case pool, 10% in 5 rounds, 3 seeds
  # (1 for the all-labels references); pretraining 43 epochs (~300 steps) and FixMatch rounds of at most 10 epochs;
  # about 40 min with 2 workers of 1 thread.
  BLOOD=${MEDWB_BLOODMNIST:-../shared/data/medmnist/bloodmnist.npz}
  OMP_NUM_THREADS=1 medwb class-sweep "$BLOOD" --classes 2,4,6,8 --strategy hybrid --strategy random:scratch \
    --budget 0.1 --rounds 5 --seeds 3 --reference-seeds 1 --workers 2 --max-pool 1000 --epochs 10 --pretrain-epochs 43 \
    --out $B/bloodmnist_classes 2>&1 | tee $B/bloodmnist_classes.log ;;
blood-medwb)
  # Issue 12: medwb's default pipeline against random + scratch on the whole BloodMNIST pool (11 959 cases, 8
  # classes), 10% in 5 rounds, default schedules; 1 seed so far (about 70 min at 1 thread on the busy machine).
  # Session 8's run (>= 80 passes over the labels) is in bloodmnist_medwb_s8 (same command, that --out).
  BLOOD=${MEDWB_BLOODMNIST:-../shared/data/medmnist/bloodmnist.npz}
  OMP_NUM_THREADS=1 medwb simulate "$BLOOD" --strategy hybrid --strategy random:scratch --budget 0.1 --rounds 5 \
    --seeds 1 --out $B/bloodmnist_medwb 2>&1 | tee $B/bloodmnist_medwb.log ;;
fixmatch-choice)
  # Issue 12, session 17: does validation keep the better of a round's two candidates? The demo's configuration,
  # hybrid arm, 4 seeds, both candidates' test metrics per round (fixmatch_choice/README.md; ~15 min at 1 thread).
  # Outputs go to /tmp: the README's tables were copied from pairs.csv / table.md / sim/table.txt by hand.
  python $B/bench_fixmatch_choice.py /tmp/fixmatch_choice_pneumonia --seeds 4
  BLOOD=${MEDWB_BLOODMNIST:-../shared/data/medmnist/bloodmnist.npz}
  python $B/bench_fixmatch_choice.py /tmp/fixmatch_choice_blood0 --data "$BLOOD" --seeds 2 --first-seed 0 &
  python $B/bench_fixmatch_choice.py /tmp/fixmatch_choice_blood2 --data "$BLOOD" --seeds 2 --first-seed 2
  wait ;;
esac
