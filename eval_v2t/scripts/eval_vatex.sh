#!/bin/sh
# Evaluate video-to-text retrieval on VATEX (TS2-Net split, several captions per video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment. Ours (checkpoints/best.pth of a
# training run) or the published code's. The SK-norm bank is the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/VATEX OUTPUT_DIR=runs/vatex_eval sh scripts/eval_vatex.sh  # in eval_v2t/ or the root
# DATA_PATH holds train_list.txt, test_list.txt, ref_captions.json and videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"runs/vatex/checkpoints/best.pth"}
DIRECTION=v2t
. "$(cd "$(dirname "$0")/../.." && pwd)/scripts/eval/eval_vatex.sh"
