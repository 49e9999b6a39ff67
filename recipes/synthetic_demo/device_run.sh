#!/usr/bin/env bash
# The whole demo in one command on a fresh GPU machine (no network, no espeak-ng): unpack the carried
# prepared text and espeak-ng bundle, synthesize on all cores beside the text stage, train every stage
# (each stops at its clock), export the model and curves into $OUT. Extra arguments are config overrides.
#   bash recipes/synthetic_demo/device_run.sh [train.stages.1.max_seconds=60 ...]
# Needs in the working tree: .whl/ (soundfile, soxr, cffi, pycparser, kaldialign wheels) and
# $CARRY/{prepared,espeak}.tar.gz (default .demo/carry).
set -euo pipefail
OUT=${OUT:-/tmp/demo_out}
WORK=${WORK:-/tmp/demo}
WORKERS=${WORKERS:-$(nproc)}
# wall seconds for train.py; past it the newest checkpoint is exported as is. The device call's own limit is
# the smaller of 600 s and the session's device time left (`status`): keep TRAIN_LIMIT ~60 s below it.
TRAIN_LIMIT=${TRAIN_LIMIT:-540}
CARRY=${CARRY:-.demo/carry}
mkdir -p "$OUT" "$WORK"
start=$(date +%s)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no synthesis left running after a failure
[ "${INSTALL_WHEELS:-1}" = 1 ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
tar xzf "$CARRY/prepared.tar.gz" -C "$WORK"
tar xzf "$CARRY/espeak.tar.gz" -C "$WORK"
# WAV, not FLAC: the trainer decodes all 107 h into memory (27 s from FLAC in run 12)
python3 recipes/synthetic_demo/synthesize.py --prepared "$WORK/prepared" --out "$WORK/audio" --format wav \
    --espeak "$WORK/espeak" --workers "$((WORKERS - 1))" --splits train dev test > "$OUT/synth.log" 2>&1 &
# logs go straight to $OUT: a device call cut by its limit still returns what happened (run 5 returned nothing)
timeout "$TRAIN_LIMIT" python3 recipes/synthetic_demo/train.py --prepared "$WORK/prepared" --audio "$WORK/audio" \
    --out "$WORK/run" --wait-audio 400 --export "$WORK/model" --curves "$OUT/curves.png" "$@" 2>&1 \
    | tee "$OUT/train.log" || echo "train.py stopped early (status $?)"
wait
if [ ! -d "$WORK/model" ]; then  # cut by the clock: ship the newest stage-end checkpoint without its training state
    last=$(ls -d "$WORK"/run/checkpoints/step-* | sort | tail -n 1)
    mkdir -p "$WORK/model" && find "$last" -maxdepth 1 -type f ! -name 'training_state*' -exec cp {} "$WORK/model/" \;
    echo "exported $last after the clock"
fi
echo "total $(( $(date +%s) - start )) s"
cp "$WORK"/model/*.safetensors "$OUT/"
cp "$OUT/synth.log" "$OUT/train.log" "$WORK/run/history.jsonl" "$WORK/model/" 2>/dev/null || true
tar czf "$OUT/model_meta.tar.gz" -C "$WORK" --exclude='*.safetensors' model
ls -la "$OUT"
