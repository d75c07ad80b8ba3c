#!/bin/sh
# Evaluate text-to-video retrieval on ActivityNet Captions val_1 (paragraph-to-video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_t2v.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment. Ours (checkpoints/best.pth of a
# training run) or the published code's. The SK-norm bank is the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/ActivityNet OUTPUT_DIR=runs/activitynet_eval sh scripts/eval_activitynet.sh  # in eval_t2v/ or the root
# DATA_PATH holds train.json, val_1.json and Activity_Videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"runs/activitynet/checkpoints/best.pth"}
DIRECTION=t2v
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_activitynet.sh"
