#!/bin/sh
# Evaluate text-to-video retrieval on VATEX (TS2-Net split, several captions per video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_t2v.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment; ours or the published code's. The
# default is train/runs/vatex/checkpoints/best.pth of this checkout, where `cd train && OUTPUT_DIR=runs/vatex sh
# scripts/train_vatex.sh` writes it. Words, frames and model settings come from the checkpoint. The SK-norm bank is the
# whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/VATEX OUTPUT_DIR=runs/vatex_eval sh scripts/eval_vatex.sh
#   (inside eval_t2v/; from the repository root: sh eval_t2v/scripts/eval_vatex.sh)
# DATA_PATH holds train_list.txt, test_list.txt, ref_captions.json and videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"$(cd "$(dirname "$0")/../.." && pwd)/train/runs/vatex/checkpoints/best.pth"}
DIRECTION=t2v
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_vatex.sh"
