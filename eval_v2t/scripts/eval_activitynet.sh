#!/bin/sh
# Evaluate video-to-text retrieval on ActivityNet Captions val_1 (paragraph-to-video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment; ours or the published code's. The
# default is train/runs/activitynet/checkpoints/best.pth of this checkout, where `cd train &&
# OUTPUT_DIR=runs/activitynet sh scripts/train_activitynet.sh` writes it. Words, frames and model settings come from
# the checkpoint. The SK-norm bank is the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/ActivityNet OUTPUT_DIR=runs/activitynet_eval sh scripts/eval_activitynet.sh
#   (inside eval_v2t/; from the repository root: sh eval_v2t/scripts/eval_activitynet.sh)
# DATA_PATH holds train.json, val_1.json and Activity_Videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"$(cd "$(dirname "$0")/../.." && pwd)/train/runs/activitynet/checkpoints/best.pth"}
DIRECTION=v2t
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_activitynet.sh"
