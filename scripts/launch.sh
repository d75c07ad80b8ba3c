# Shared by train/scripts/*.sh and eval_*/scripts/*.sh (sourced, POSIX sh): required variables and the torchrun line.
#   PYTHON       the interpreter (default python3, then python); torchrun runs as $PYTHON -m torch.distributed.run
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

. "$ROOT/scripts/python.sh"
if [ -z "${NGPU:-}" ]; then
    NGPU=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

# Relative paths stay relative to where the script was started; the project is found through PYTHONPATH.
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

LAUNCH="$PYTHON -m torch.distributed.run --nproc_per_node=$NGPU --nnodes=$NNODES --node_rank=$NODE_RANK"
LAUNCH="$LAUNCH --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT"
