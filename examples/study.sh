#!/usr/bin/env bash
# The course study, end to end, with gentool: the six networks' tables (VAE, GAN, WGAN on MNIST and CIFAR-10), the
# six training runs (each evaluated), the VAE's complexity × latent sweep on MNIST, and one HTML report of it all.
#
#   bash examples/study.sh                  # the study at full size (about 14 hours on 2 CPU cores, see below)
#   SMOKE=1 bash examples/study.sh          # every step, small: about 40 minutes on 2 CPU cores shared with other jobs
#
# Re-running the same command after an interruption (Ctrl-C, a killed job) continues where it stopped: every run
# uses --resume auto, the sweep resumes its own trials, and evaluations and reports are redone only when their run
# changed. Every gentool command is printed before it runs; the script goes on past a failed step and exits 1 at
# the end when one failed.
#
# Settings (environment variables):
#   SMOKE=1          the quick mode: 2,000 MNIST / 1,000 CIFAR-10 training images, 3 epochs or 2 minutes a run,
#                    a 2 × 2 sweep of 8 epochs on 1,000 images (two trials at a time), 500 images per evaluation
#   OUT=DIR          where everything goes (default: study, or study-smoke with SMOKE=1)
#   DATA_DIR=DIR     the folder holding MNIST and CIFAR-10 (default: gentool's, where they are fetched on first use)
#   CIFAR=SPEC       cifar10 (default), or CIFAR-10 as an image folder, e.g. path/to/cifar10/train
#   MINUTES=M        time budget of each training run (full mode: 120); re-running gives each unfinished run M more
#   THREADS=N        CPU threads per training run (default: torch's)
#   EVAL_CIFAR=0|1   score the CIFAR-10 runs (full mode: 1, quick mode: 0). The first CIFAR-10 evaluation trains
#                    gentool's reference classifier for it once, about an hour on 2 CPU cores, then it is cached.
#
# Full size on 2 CPU cores: the six runs take MINUTES each (12 hours at 120; the study's lengths - e.g. its WGAN's
# 400 epochs, about 13 hours on MNIST alone at 114 s an epoch - do not fit, so each run stops at its budget with a
# checkpoint that a re-run continues), the 12-trial sweep of 20 epochs about 1-2 hours, the CIFAR-10 reference
# classifier about an hour (once), evaluations and reports minutes: about 15 hours. No GPU was available to measure
# what one takes; there, leave MINUTES as it is and re-run until every run has its epochs, or raise it.

set -uo pipefail

SMOKE=${SMOKE:-0}
CIFAR=${CIFAR:-cifar10}
MNIST_DATA=(--data mnist)
CIFAR_DATA=(--data "$CIFAR")
if [ -n "${DATA_DIR:-}" ]; then
    MNIST_DATA+=(--data-dir "$DATA_DIR")
    [ "$CIFAR" = cifar10 ] && CIFAR_DATA+=(--data-dir "$DATA_DIR")
fi
RUNTIME=()
[ -n "${THREADS:-}" ] && RUNTIME+=(--threads "$THREADS")

if [ "$SMOKE" = 1 ]; then
    OUT=${OUT:-study-smoke}
    MINUTES=${MINUTES:-2}
    EVAL_CIFAR=${EVAL_CIFAR:-0}
    EVAL_N=500
    WATCH_N=500
    MNIST_LIMIT=(--limit 2000)
    CIFAR_LIMIT=(--limit 1000)
    declare -A EPOCHS=([vae]=3 [gan]=3 [wgan]=3)
    EVAL_EVERY=1
    SWEEP=(--latent-dim 2,10 --width 0.5,2 --epochs 8 --limit 1000 --workers 2)
else
    OUT=${OUT:-study}
    MINUTES=${MINUTES:-120}
    EVAL_CIFAR=${EVAL_CIFAR:-1}
    EVAL_N=10000
    WATCH_N=2000
    MNIST_LIMIT=()
    CIFAR_LIMIT=()
    declare -A EPOCHS=([vae]=50 [gan]=100 [wgan]=400)
    EVAL_EVERY=10
    SWEEP=(--latent-dim 2,5,10,20 --width 0.5,1,2 --epochs 20 --workers 2)
fi

failed=()

step() {  # print a gentool command and run it: on Ctrl-C or SIGTERM stop here, on a failure note it and go on
    printf '+ %s\n' "$*" >&2
    local code=0
    "$@" || code=$?
    checked $code "$*"
}

step_into() {  # as step, with the command's output written to FILE
    local file=$1; shift
    printf '+ %s > %s\n' "$*" "$file" >&2
    local code=0
    "$@" > "$file" || code=$?
    checked $code "$*"
}

checked() {  # gentool exits 130 (SIGINT) or 143 (SIGTERM) after saving what a re-run continues
    if [ "$1" = 130 ] || [ "$1" = 143 ]; then
        echo "study.sh: interrupted; run the same command again to continue" >&2
        exit "$1"
    elif [ "$1" != 0 ]; then
        echo "study.sh: step failed (exit $1): $2" >&2
        failed+=("$2")
    fi
}

evaluate() {  # score RUN's CHECKPOINT into RUN/eval-NAME.json unless that is newer than the checkpoint
    local run=$1 name=$2 data_args=("${@:3}")
    local ckpt="$run/$name.safetensors" result="$run/eval-$name.json"
    [ -f "$ckpt" ] || return 0
    [ "$result" -nt "$ckpt" ] && return 0
    step gentool evaluate "$ckpt" "${data_args[@]}" --n "$EVAL_N" --out "$result" --overwrite
}

mkdir -p "$OUT/summaries" "$OUT/runs"

# 1. The networks: layer tables and parameter totals, as the study printed them.
for model in vae gan wgan; do
    for data in mnist cifar10; do
        table="$OUT/summaries/$model-$data.txt"
        [ -s "$table" ] || step_into "$table" gentool summary "$model" --data "$data"
    done
done

# 2. The six runs. The adversarial ones are scored every EVAL_EVERY epochs (FID, modes: the GAN's collapse) and keep
# their lowest-FID state as best.safetensors; the WGAN also stops at a divergence (the study's blow-up after epoch
# 350, which the study's author undid by hand by keeping epoch 350).
for model in vae gan wgan; do
    for data in mnist cifar10; do
        run="$OUT/runs/$model-$data"
        if [ "$data" = mnist ]; then real=("${MNIST_DATA[@]}"); limit=("${MNIST_LIMIT[@]}"); scored=1
        else real=("${CIFAR_DATA[@]}"); limit=("${CIFAR_LIMIT[@]}"); scored=$EVAL_CIFAR; fi
        watch=()
        if [ "$model" != vae ] && [ "$scored" = 1 ]; then watch=(--eval-every "$EVAL_EVERY" --eval-n "$WATCH_N"); fi
        [ "$model" = wgan ] && watch+=(--stop-on-divergence)
        step gentool train "$model" "${real[@]}" "${limit[@]}" --epochs "${EPOCHS[$model]}" --max-minutes "$MINUTES" \
            "${watch[@]}" "${RUNTIME[@]}" --log-every 60 --out "$run" --resume auto
        if [ "$scored" = 1 ]; then
            evaluate "$run" last "${real[@]}"
            evaluate "$run" best "${real[@]}"
        else
            echo "study.sh: $run not scored (EVAL_CIFAR=0; see the top of this script)" >&2
        fi
    done
done

# 3. The complexity × latent sweep of the VAE on MNIST (the study's Figures 10 and 11), with held-out losses.
step gentool sweep vae "${MNIST_DATA[@]}" "${SWEEP[@]}" --metric loss --out "$OUT/sweep-vae-mnist"

# 4. One report: the six runs compared and side by side, then the sweep (its figures, results and trials).
step gentool report "$OUT" --out "$OUT/report.html" --overwrite

echo "study.sh: networks in $OUT/summaries/, runs in $OUT/runs/, sweep in $OUT/sweep-vae-mnist/;" \
     "open $OUT/report.html" >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "study.sh: ${#failed[@]} step(s) failed:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
