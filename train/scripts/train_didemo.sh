#!/bin/sh
# Train UCoFiA on DiDeMo, paragraph-to-video (train_data.json; validation on val_data.json; test_data.json for eval).
# 64 words and 64 frames as in the code base UCoFiA builds on (X-CLIP's DiDeMo script: 20 epochs, batch 64);
# the published UCoFiA code ships no DiDeMo script. Gradient checkpointing keeps 64 frames in memory.
#   DATA_PATH=/data/DiDeMo OUTPUT_DIR=runs/didemo sh scripts/train_didemo.sh
# DATA_PATH holds the annotation files and videos/; ANNOTATIONS and VIDEOS override them.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the DiDeMo folder"
require OUTPUT_DIR "where checkpoints and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/videos}

launch -m train.main --do_train --num_thread_reader 8 \
    --lr 1e-4 --coef_lr 1e-3 --batch_size 64 --batch_size_val 24 --epochs 20 --n_display 10 \
    --datatype didemo --data_path "$ANNOTATIONS" --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" \
    --max_words 64 --max_frames 64 --feature_framerate 1 --slice_framepos 2 --grad_checkpointing \
    --freeze_layer_num 0 --sim_header seqTransf --pretrained_clip_name ViT-B/32 "$@"
