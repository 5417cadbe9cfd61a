#!/usr/bin/env bash
# Distributed training with torchrun through mmengine's pytorch launcher.
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options]
# Multi-machine: NNODES, NODE_RANK, MASTER_ADDR and PORT on every machine.
# PYTHON picks the interpreter (default: python on PATH).
# Backend: nccl on GPUs; without CUDA mmvfm switches to gloo (one process
# per CPU share: torchrun sets OMP_NUM_THREADS=1 unless you set it).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG NUM_PROCS [train.py options]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PYTHONPATH="$(dirname "$TOOLS")${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"
