# Shared by eval_t2v/scripts/eval_activitynet.sh and eval_v2t/scripts/eval_activitynet.sh (sourced; they set CKPT and
# DIRECTION; words, frames and model settings come from the checkpoint): ActivityNet Captions val_1 (paragraph-to-
# video).
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
eval_direction
require DATA_PATH "the ActivityNet folder"
require OUTPUT_DIR "where results and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/Activity_Videos}

launch -m eval_$DIRECTION.main --do_eval --init_model "$CKPT" --num_thread_reader 8 --batch_size_val 16 \
    --datatype activity --data_path "$ANNOTATIONS" \
    --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" --sk_bank_size "${SK_BANK_SIZE:-0}" \
    --feature_framerate 1 --slice_framepos 2 "$@"
