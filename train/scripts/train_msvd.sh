#!/bin/sh
# Train UCoFiA on MSVD (train_list.txt, val_list.txt, test_list.txt, raw-captions.pkl; several captions per video).
# The published code ships no MSVD script: this uses its MSR-VTT recipe (32 words, 12 frames, batch 128, 15 epochs,
# lr 1e-4 / CLIP 1e-7). Validation uses MSVD's own val list.
#   DATA_PATH=/data/MSVD OUTPUT_DIR=runs/msvd sh scripts/train_msvd.sh
# DATA_PATH holds the annotation files and MSVD_Videos/; ANNOTATIONS and VIDEOS override them.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the MSVD folder"
require OUTPUT_DIR "where checkpoints and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/MSVD_Videos}

launch -m train.main --do_train --num_thread_reader 8 \
    --lr 1e-4 --coef_lr 1e-3 --batch_size 128 --batch_size_val 32 --epochs 15 --n_display 100 \
    --datatype msvd --data_path "$ANNOTATIONS" --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" \
    --max_words 32 --max_frames 12 --feature_framerate 1 --slice_framepos 2 \
    --freeze_layer_num 0 --sim_header seqTransf --pretrained_clip_name ViT-B/32 "$@"
