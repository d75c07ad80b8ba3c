#!/bin/sh
# Train UCoFiA on ActivityNet Captions, paragraph-to-video (train.json; val_1.json is the test split and, as the
# dataset has no other held-out split, also the validation split: results are labelled so).
# 64 words and 64 frames as in the code base UCoFiA builds on (X-CLIP's ActivityNet script: 20 epochs, batch 112);
# the published UCoFiA code ships no ActivityNet script. Gradient checkpointing keeps 64 frames in memory.
#   DATA_PATH=/data/ActivityNet OUTPUT_DIR=runs/activitynet sh scripts/train_activitynet.sh
# DATA_PATH holds train.json, val_1.json and Activity_Videos/; ANNOTATIONS and VIDEOS override them.
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/launch.sh"
require DATA_PATH "the ActivityNet folder"
require OUTPUT_DIR "where checkpoints and logs go"
ANNOTATIONS=${ANNOTATIONS:-$DATA_PATH}
VIDEOS=${VIDEOS:-$DATA_PATH/Activity_Videos}

launch -m train.main --do_train --num_thread_reader 8 \
    --lr 1e-4 --coef_lr 1e-3 --batch_size 112 --batch_size_val 16 --epochs 20 --n_display 50 \
    --datatype activity --data_path "$ANNOTATIONS" --features_path "$VIDEOS" --output_dir "$OUTPUT_DIR" \
    --max_words 64 --max_frames 64 --feature_framerate 1 --slice_framepos 2 --grad_checkpointing \
    --freeze_layer_num 0 --sim_header seqTransf --pretrained_clip_name ViT-B/32 "$@"
