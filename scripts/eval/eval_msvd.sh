# Shared by eval_t2v/scripts/eval_msvd.sh and eval_v2t/scripts/eval_msvd.sh (sourced; they set CKPT and
# DIRECTION): MSVD (several captions per video).
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the MSVD folder"
require OUTPUT_DIR "where results and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/MSVD_Videos}

run $LAUNCH -m eval_$DIRECTION.main --do_eval --init_model "$CKPT" --num_thread_reader 8 --batch_size_val 32 \
    --datatype msvd --data_path "$ANNOTATIONS" \
    --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" --sk_bank_size "${SK_BANK_SIZE:-0}" \
    --max_words 32 --max_frames 12 --feature_framerate 1 --slice_framepos 2 --sim_header seqTransf "$@"
