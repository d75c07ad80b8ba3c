# Shared by eval_t2v/scripts/eval_msrvtt.sh and eval_v2t/scripts/eval_msrvtt.sh (sourced; they set CKPT and
# DIRECTION; words, frames and model settings come from the checkpoint): MSR-VTT 1k-A.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
eval_direction
require DATA_PATH "the MSRVTT folder"
require OUTPUT_DIR "where results and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH/msrvtt_data}
VIDEOS=${VIDEOS:-$DATA_PATH/videos/all}

launch -m eval_$DIRECTION.main --do_eval --init_model "$CKPT" --num_thread_reader 8 --batch_size_val 32 \
    --datatype msrvtt --train_csv "$ANNOTATIONS/MSRVTT_train.9k.csv" --val_csv "$ANNOTATIONS/MSRVTT_JSFUSION_test.csv" \
    --data_path "$ANNOTATIONS/MSRVTT_data.json" \
    --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" --sk_bank_size "${SK_BANK_SIZE:-0}" \
    --feature_framerate 1 --slice_framepos 2 "$@"
