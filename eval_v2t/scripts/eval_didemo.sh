#!/bin/sh
# Evaluate video-to-text retrieval on DiDeMo test (paragraph-to-video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment; ours or the published code's. The
# default is train/runs/didemo/checkpoints/best.pth of this checkout, where `cd train && OUTPUT_DIR=runs/didemo sh
# scripts/train_didemo.sh` writes it. Words, frames and model settings come from the checkpoint. The SK-norm bank is
# the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/DiDeMo OUTPUT_DIR=runs/didemo_eval sh scripts/eval_didemo.sh
#   (inside eval_v2t/; from the repository root: sh eval_v2t/scripts/eval_didemo.sh)
# DATA_PATH holds train_data.json, val_data.json, test_data.json and videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"$(cd "$(dirname "$0")/../.." && pwd)/train/runs/didemo/checkpoints/best.pth"}
DIRECTION=v2t
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_didemo.sh"
