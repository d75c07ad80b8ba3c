#!/bin/sh
# The embedded default: no download, no GPU. Generates a synthetic video-caption set (coloured shapes moving over
# backgrounds, real mp4 files), decodes every clip once into a frame cache, trains UCoFiA with a small randomly
# initialised CLIP, evaluates text-to-video and video-to-text retrieval with SK-norm, prints each direction's table and a summary, and ends with
# the paths of the training curves (training.png) and of the evaluation report (report.html, open it in a browser).
#   sh scripts/demo.sh
# Knobs (environment): PYTHON (default python3, then python), DEMO_DIR (default runs/demo), DEMO_TRAIN / DEMO_TEST
# (videos, 240 / 60), DEMO_EPOCHS (3), DEMO_CLIP (random:tiny; with modules/ViT-B-32.pt present, DEMO_CLIP=ViT-B/32
# fine-tunes OpenAI's CLIP with the published learning rates instead, which is much slower on a CPU).
set -e
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${DEMO_DIR:-runs/demo}
TRAIN=${DEMO_TRAIN:-240}
TEST=${DEMO_TEST:-60}
EPOCHS=${DEMO_EPOCHS:-3}
CLIP=${DEMO_CLIP:-random:tiny}
# The code of this checkout, installed or not.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
. "$ROOT/scripts/python.sh"

for knob in "DEMO_TRAIN=$TRAIN" "DEMO_TEST=$TEST" "DEMO_EPOCHS=$EPOCHS"; do
    value=${knob#*=}
    case "$value" in
        ''|*[!0-9]*) value=0 ;;
    esac
    if [ "$value" -lt 1 ]; then
        echo "error: $knob: expected a whole number of at least 1" >&2
        exit 2
    fi
done

# The CLIP weights are checked before any work (random:<arch> needs none).
"$PYTHON" -c 'import sys
from modules.common.runtime import run_entry
from modules.model.clip import clip_weights_file
sys.exit(run_entry(lambda: clip_weights_file(sys.argv[1]) and 0))' "$CLIP" || exit 2

# The demo only ever deletes a folder it made itself (marked by .ucofia_demo).
if [ -e "$OUT" ] && [ ! -e "$OUT/.ucofia_demo" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    echo "error: $OUT exists and was not made by the demo; set DEMO_DIR to another folder" >&2
    exit 2
fi
rm -rf "$OUT/data" "$OUT/frames" "$OUT/train" "$OUT/eval" "$OUT/training.png" "$OUT/report.html"
mkdir -p "$OUT"
touch "$OUT/.ucofia_demo"
START=$(date +%s)

if [ "$CLIP" = "random:tiny" ]; then
    # From scratch: one learning rate for every parameter and nothing frozen (the published recipe's small CLIP
    # learning rate and frozen embeddings assume OpenAI's trained weights).
    LR=1e-3; COEF_LR=1; FREEZE=-1; BATCH=32; WORDS=16
else
    LR=1e-4; COEF_LR=1e-3; FREEZE=0; BATCH=16; WORDS=32
fi

# Runs "$@" with the dataset flags; every path is quoted, so DEMO_DIR may hold spaces.
with_data() {
    "$@" --datatype msrvtt --train_csv "$OUT/data/train.csv" --val_csv "$OUT/data/test.csv" \
        --data_path "$OUT/data/data.json" --features_path "$OUT/data/videos" --max_words "$WORDS" --max_frames 4
}
# Training and evaluation read the frames decoded once in step 2 (--frame_cache_strict: nothing is decoded again);
# with the decoding gone, one loader worker leaves both cores to the model.
with_frames() {
    with_data "$@" --frame_cache "$OUT/frames" --frame_cache_strict --num_thread_reader 1 --batch_size_val 32
}

echo "== 1/5 synthetic set: $TRAIN training and $TEST test videos in $OUT/data"
"$PYTHON" "$ROOT/scripts/make_synthetic.py" --out "$OUT/data" --train "$TRAIN" --test "$TEST" --seed 0
echo "== 2/5 frame cache: every clip decoded once ($OUT/frames)"
with_data "$PYTHON" "$ROOT/scripts/cache_frames.py" --frame_cache "$OUT/frames" --splits train,test --workers 2
echo "== 3/5 training UCoFiA on $CLIP for $EPOCHS epochs ($OUT/train)"
with_frames "$PYTHON" -m train.main --do_train --lr "$LR" --coef_lr "$COEF_LR" --freeze_layer_num "$FREEZE" \
    --batch_size "$BATCH" --pretrained_clip_name "$CLIP" --epochs "$EPOCHS" --expand_msrvtt_sentences \
    --n_display 20 --output_dir "$OUT/train"
echo "== 4/5 text-to-video retrieval with SK-norm (bank: every training caption)"
with_frames "$PYTHON" -m eval_t2v.main --init_model "$OUT/train/checkpoints/last.pth" --save_sims --output_dir "$OUT/eval"
echo "== 5/5 video-to-text retrieval with SK-norm (bank: every training video)"
with_frames "$PYTHON" -m eval_v2t.main --init_model "$OUT/train/checkpoints/last.pth" --save_sims --output_dir "$OUT/eval"
"$PYTHON" "$ROOT/scripts/plot_training.py" "$OUT/train" --out "$OUT/training.png" > /dev/null
"$PYTHON" "$ROOT/scripts/report.py" "$OUT/eval" --out "$OUT/report.html" > /dev/null

echo
echo "UCoFiA demo: $CLIP trained on $TRAIN synthetic videos for $EPOCHS epochs, last epoch's checkpoint," \
     "$(( $(date +%s) - START )) s in all"
"$PYTHON" "$ROOT/scripts/summarize_results.py" "$OUT/eval"
echo
echo "training curves: $OUT/training.png"
echo "evaluation report: $OUT/report.html"
