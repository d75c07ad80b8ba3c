#!/bin/sh
# Train UCoFiA on VATEX (TS2-Net split: train_list.txt / test_list.txt / ref_captions.json; validation on the test
# list, which doubles as VATEX's val split there) with the published recipe: 32 words, 12 frames, batch 128, 15 epochs.
#   DATA_PATH=/data/VATEX OUTPUT_DIR=runs/vatex sh scripts/train_vatex.sh
# DATA_PATH holds the annotation files and videos/; ANNOTATIONS and VIDEOS override them.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the VATEX folder"
require OUTPUT_DIR "where checkpoints and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/videos}

launch -m train.main --do_train --num_thread_reader 8 \
    --lr 1e-4 --coef_lr 1e-3 --batch_size 128 --batch_size_val 32 --epochs 15 --n_display 100 \
    --datatype vatex --data_path "$ANNOTATIONS" --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" \
    --max_words 32 --max_frames 12 --feature_framerate 1 --slice_framepos 2 \
    --freeze_layer_num 0 --sim_header seqTransf --pretrained_clip_name ViT-B/32 "$@"
