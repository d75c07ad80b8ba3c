#!/bin/sh
# Evaluate text-to-video retrieval on MSVD (several captions per video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_t2v.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment; ours or the published code's. The
# default is train/runs/msvd/checkpoints/best.pth of this checkout, where `cd train && OUTPUT_DIR=runs/msvd sh
# scripts/train_msvd.sh` writes it. Words, frames and model settings come from the checkpoint. The SK-norm bank is the
# whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/MSVD OUTPUT_DIR=runs/msvd_eval sh scripts/eval_msvd.sh
#   (inside eval_t2v/; from the repository root: sh eval_t2v/scripts/eval_msvd.sh)
# DATA_PATH holds raw-captions.pkl, train_list.txt, val_list.txt, test_list.txt, MSVD_Videos/;
# ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"$(cd "$(dirname "$0")/../.." && pwd)/train/runs/msvd/checkpoints/best.pth"}
DIRECTION=t2v
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_msvd.sh"
