# Shared by train/scripts/*.sh and eval_*/scripts/*.sh (sourced, POSIX sh): required variables and the launch line.
#   PYTHON       the interpreter (default python3, then python)
#   NGPU         processes per node (default: every visible GPU, or 1 on a machine without one)
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node runs (defaults: one node on this machine)
#   FRAME_CACHE  a frame cache folder (scripts/cache_frames.py), passed on as --frame_cache
#   DRY_RUN=1    print the command instead of running it

require() {
    eval "value=\${$1:-}"
    if [ -z "$value" ]; then
        echo "error: set $1 ($2), e.g. $1=/path/to/it sh $0" >&2
        exit 2
    fi
}

# The shared bodies under scripts/eval/ run for eval_t2v/scripts/*.sh and eval_v2t/scripts/*.sh, which set
# DIRECTION and CKPT; run directly, they refuse before anything else.
eval_direction() {
    name=$(basename "$0")
    case "${DIRECTION:-}" in
        t2v|v2t) ;;
        *) echo "error: DIRECTION is '${DIRECTION:-}', not t2v or v2t: run eval_t2v/scripts/$name (text-to-video)" \
                "or eval_v2t/scripts/$name (video-to-text), which set it" >&2
           exit 2 ;;
    esac
    require CKPT "the checkpoint to evaluate"
}

. "$ROOT/scripts/python.sh"

# Runs "$@" (or prints it with DRY_RUN=1) with the project on PYTHONPATH. Relative paths stay relative to where the
# script was started.
run() {
    if [ "${DRY_RUN:-0}" = "1" ]; then
        echo "$@"
        return 0
    fi
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$@"
}

# Sourced without arguments, this file shares the script's own: the extra flags "$@" every script passes on.
if [ -n "${FRAME_CACHE:-}" ]; then
    set -- --frame_cache "$FRAME_CACHE" "$@"
fi

# launch -m MODULE ARGS...: the entry point on every process. One process on one node runs as a plain process;
# several run under torchrun through modules.common.launcher, which takes torchrun's flags and leaves a failed
# worker's one-line error and exit status as the whole report (plain torchrun adds its traceback and status 1).
launch() {
    if [ -z "${NGPU:-}" ]; then
        NGPU=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)
    fi
    if [ "$NGPU" = "1" ] && [ "${NNODES:-1}" = "1" ]; then
        run "$PYTHON" "$@"
    else
        run "$PYTHON" -m modules.common.launcher --nproc_per_node="$NGPU" --nnodes="${NNODES:-1}" \
            --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
            --master_port="${MASTER_PORT:-29500}" "$@"
    fi
}
