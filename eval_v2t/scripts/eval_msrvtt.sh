#!/bin/sh
# Evaluate video-to-text retrieval on MSR-VTT 1k-A: raw, SK-norm (the paper's
# protocol) and DSL side by side, overall and per level; writes $OUTPUT_DIR/results_v2t.json.
# CKPT is the checkpoint to evaluate: edit it here or set it in the environment. Ours (checkpoints/best.pth of a
# training run) or the published code's. The SK-norm bank is the whole training split; SK_BANK_SIZE=N subsamples it.
#   DATA_PATH=/data/MSRVTT OUTPUT_DIR=runs/msrvtt_eval sh scripts/eval_msrvtt.sh  # in eval_v2t/ or the root
# DATA_PATH holds msrvtt_data/ (MSRVTT_train.9k.csv for the SK bank, MSRVTT_JSFUSION_test.csv, MSRVTT_data.json)
# and videos/all/; ANNOTATIONS and VIDEOS override them.
CKPT=${CKPT:-"runs/msrvtt/checkpoints/best.pth"}
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the MSRVTT folder"
require OUTPUT_DIR "where results and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH/msrvtt_data}
VIDEOS=${VIDEOS:-$DATA_PATH/videos/all}

run $LAUNCH -m eval_v2t.main --do_eval --init_model "$CKPT" --num_thread_reader 8 --batch_size_val 32 \
    --datatype msrvtt --train_csv "$ANNOTATIONS/MSRVTT_train.9k.csv" --val_csv "$ANNOTATIONS/MSRVTT_JSFUSION_test.csv" \
    --data_path "$ANNOTATIONS/MSRVTT_data.json" \
    --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" --sk_bank_size "${SK_BANK_SIZE:-0}" \
    --max_words 32 --max_frames 12 --feature_framerate 1 --slice_framepos 2 --sim_header seqTransf "$@"
