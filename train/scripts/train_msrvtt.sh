#!/bin/sh
# Train UCoFiA on MSR-VTT (9k training videos, every caption; validation on the 1k-A test, which MSR-VTT uses as
# its only held-out split) with the published recipe: 32 words, 12 frames at 1 fps, global batch 128, 15 epochs,
# lr 1e-4 (CLIP 1e-7), ViT-B/32 from modules/ViT-B-32.pt.
#   DATA_PATH=/data/MSRVTT OUTPUT_DIR=runs/msrvtt sh scripts/train_msrvtt.sh      (inside train/, or from the root)
# DATA_PATH holds msrvtt_data/ (MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, MSRVTT_data.json) and videos/all/;
# ANNOTATIONS and VIDEOS override those two. Extra flags are passed on, e.g. --precision bf16.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the MSR-VTT folder"
require OUTPUT_DIR "where checkpoints and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH/msrvtt_data}
VIDEOS=${VIDEOS:-$DATA_PATH/videos/all}

launch -m train.main --do_train --num_thread_reader 8 \
    --lr 1e-4 --coef_lr 1e-3 --batch_size 128 --batch_size_val 32 --epochs 15 --n_display 100 \
    --datatype msrvtt --expand_msrvtt_sentences \
    --train_csv "$ANNOTATIONS/MSRVTT_train.9k.csv" \
    --val_csv "$ANNOTATIONS/MSRVTT_JSFUSION_test.csv" \
    --data_path "$ANNOTATIONS/MSRVTT_data.json" \
    --features_path "$VIDEOS" \
    --output_dir "$OUTPUT_DIR" \
    --max_words 32 --max_frames 12 --feature_framerate 1 --slice_framepos 2 \
    --freeze_layer_num 0 --sim_header seqTransf --pretrained_clip_name ViT-B/32 "$@"
