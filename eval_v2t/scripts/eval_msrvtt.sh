#!/bin/sh
# Evaluate video-to-text retrieval on MSR-VTT 1k-A: raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment; ours or the published code's. The
# default is train/runs/msrvtt/checkpoints/best.pth of this checkout, where `cd train && OUTPUT_DIR=runs/msrvtt sh
# scripts/train_msrvtt.sh` writes it. Words, frames and model settings come from the checkpoint. The SK-norm bank is
# the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/MSRVTT OUTPUT_DIR=runs/msrvtt_eval sh scripts/eval_msrvtt.sh
#   (inside eval_v2t/; from the repository root: sh eval_v2t/scripts/eval_msrvtt.sh)
# DATA_PATH holds msrvtt_data/ (MSRVTT_train.9k.csv for the SK bank, MSRVTT_JSFUSION_test.csv, MSRVTT_data.json)
# and videos/all/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"$(cd "$(dirname "$0")/../.." && pwd)/train/runs/msrvtt/checkpoints/best.pth"}
DIRECTION=v2t
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_msrvtt.sh"
