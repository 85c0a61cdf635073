#!/usr/bin/env bash
# A long training run (the study's WGAN on MNIST, 400 epochs) as a SLURM job that may be preempted or hit its time
# limit and be requeued, any number of times. Submit once, from the folder that should hold runs/:
#
#   sbatch examples/slurm_train.sh
#
# The same command line serves the first start and every restart: --resume auto continues the run in --out when it
# has a checkpoint and starts it there otherwise (also after a kill before its first checkpoint). On preemption or
# at the time limit SLURM sends SIGTERM: gentool finishes its step, saves last.safetensors and exits 143; with
# --requeue, SLURM puts the job back in the queue, and its next start continues from that checkpoint. A job that
# ends by its time limit is not requeued by SLURM, so --signal=USR1@120 asks for SIGUSR1 120 seconds before the
# limit: gentool handles it like SIGTERM (finishes its step, saves last.safetensors, prints the resume command) and
# exits 138 (128 + SIGUSR1), on which the script below requeues the job itself. SLURM sends that signal to job
# steps, hence `srun` (a command started directly by the batch script would not receive it). The batch log gets a progress line every
# --log-every seconds with the whole run's ETA; `gentool summary runs/wgan-mnist` shows where the run stands.
#
# MNIST is fetched on the first use into the data folder; compute nodes without internet need it there first, e.g.
# on a login node: python -c "import torchvision.datasets as d; d.MNIST('$HOME/data', download=True)"
#
# PBS/Torque: #PBS -r y makes a job rerunnable; the command stays the same.

#SBATCH --job-name=wgan-mnist
#SBATCH --requeue                       # put the job back in the queue when it is preempted
#SBATCH --open-mode=append              # a requeued job appends to the same log
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=wgan-mnist-%j.log
#SBATCH --signal=USR1@120               # SIGUSR1 to the job step 120 s before the time limit: save and stop

set -euo pipefail

export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-4}"
export GENTOOL_DATA="${GENTOOL_DATA:-$HOME/data}"   # a folder holding MNIST (see above)

set +e                                  # gentool's exit code decides what follows
srun --cpus-per-task="$OMP_NUM_THREADS" \
    gentool train wgan --data mnist --epochs 400 --out runs/wgan-mnist --resume auto --log-every 60
status=$?
set -e
if [ "$status" -eq 138 ]; then          # stopped by the time-limit signal, checkpoint saved: go on in a new job
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
