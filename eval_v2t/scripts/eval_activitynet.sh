#!/bin/sh
# Evaluate video-to-text retrieval on ActivityNet Captions val_1 (paragraph-to-video): raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment. Ours (checkpoints/best.pth of a
# training run) or the published code's. The SK-norm bank is the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/ActivityNet OUTPUT_DIR=runs/activitynet_eval sh scripts/eval_activitynet.sh  # in eval_v2t/ or the root
# DATA_PATH holds train.json, val_1.json and Activity_Videos/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"runs/activitynet/checkpoints/best.pth"}
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the ActivityNet folder"
require OUTPUT_DIR "where results and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/Activity_Videos}

run $LAUNCH -m eval_v2t.main --do_eval --init_model "$CKPT" --num_thread_reader 8 --batch_size_val 16 \
    --datatype activity --data_path "$ANNOTATIONS" \
    --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" --sk_bank_size "${SK_BANK_SIZE:-0}" \
    --max_words 64 --max_frames 64 --feature_framerate 1 --slice_framepos 2 --sim_header seqTransf "$@"
