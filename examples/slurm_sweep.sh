#!/usr/bin/env bash
# The study's VAE sweep (latent size 2,5,10,20 × width 0.5,1,2 = 12 trials) as a SLURM job array: one array task
# trains one trial. Submit from the folder that should hold sweeps/:
#
#   gentool sweep vae --data mnist --latent-dim 2,5,10,20 --width 0.5,1,2 --list    # 12 trials: indices 0-11
#   sbatch examples/slurm_sweep.sh
#
# Every task runs the same command with its own --trial; they share sweeps/vae-mnist/sweep.json safely (a lock
# file and atomic writes), and whichever task finishes the last trial writes results.csv, results.json and the
# figures. A task that is preempted or hits its time limit (SIGTERM) saves its checkpoint and records its trial as
# interrupted: resubmit the array (or just that index, e.g. sbatch --array=7) and it continues from there;
# finished trials return at once. `gentool summary sweeps/vae-mnist` shows where everything stands.
#
# PBS/Torque: use `#PBS -J 0-11` and $PBS_ARRAY_INDEX instead of the two SLURM lines marked below.

#SBATCH --job-name=vae-sweep
#SBATCH --array=0-11                    # SLURM: one task per trial
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=vae-sweep-%A_%a.log

set -euo pipefail

export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-4}"
export GENTOOL_DATA="${GENTOOL_DATA:-$HOME/data}"   # a folder holding MNIST/raw (fetched once on a login node)

gentool sweep vae --data mnist --latent-dim 2,5,10,20 --width 0.5,1,2 --epochs 20 \
    --out sweeps/vae-mnist --trial "${SLURM_ARRAY_TASK_ID}"     # SLURM: the task's index
