#!/usr/bin/env bash
# Runs `tessera generate` over the GPUs (or cores) of one machine with Open MPI's mpirun.
#
#   bash cluster/mpirun_single_node.sh MODEL_DIR PROMPTS.jsonl [LAYOUT] [-- extra tessera flags]
#
# LAYOUT is TP[xPP[xDP]]: "8" (tp=8, the default), "4x2" (tp=4, pp=2), "2x1x4" (tp=2, dp=4);
# mpirun starts TP*PP*DP ranks. Environment:
#   TESSERA_BIN      the binary (default: build/launcher/tessera)
#   TESSERA_BACKEND  cuda (default) or cpu
#   OUTPUT           results JSONL (default: results.jsonl)
#   MPIRUN           the mpirun of the Open MPI tessera was built with (default: mpirun)
#   MPIRUN_ARGS      extra mpirun arguments, e.g. "--mca btl_tcp_if_include eth0"
# Network and NCCL variables (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) set in the environment are
# forwarded to every rank (see cluster/README.md).
set -euo pipefail

usage="usage: bash cluster/mpirun_single_node.sh MODEL_DIR PROMPTS.jsonl [TP[xPP[xDP]]] [-- flags]"
if [ $# -lt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
model="$1"
prompts="$2"
shift 2
layout=8
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  layout="$1"
  shift
fi
if [ "${1:-}" = "--" ]; then shift; fi

if ! [[ "$layout" =~ ^[1-9][0-9]*(x[1-9][0-9]*){0,2}$ ]]; then
  echo "layout \"$layout\" is not TP[xPP[xDP]] (e.g. 8, 4x2, 2x1x4)" >&2
  exit 2
fi
IFS=x read -r tp pp dp <<<"$layout"
pp="${pp:-1}"
dp="${dp:-1}"
np=$((tp * pp * dp))

bin="${TESSERA_BIN:-build/launcher/tessera}"
backend="${TESSERA_BACKEND:-cuda}"
output="${OUTPUT:-results.jsonl}"
mpirun="${MPIRUN:-mpirun}"
[ -x "$bin" ] || { echo "tessera binary not found at $bin; build it or set TESSERA_BIN" >&2; exit 2; }
[ -d "$model" ] || { echo "model directory $model not found" >&2; exit 2; }
[ -f "$prompts" ] || { echo "prompts file $prompts not found" >&2; exit 2; }

args=(-np "$np")
# Open MPI refuses to run as root unless told; containers often run as root.
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi
# More ranks than cores (CPU runs on a small machine) needs --oversubscribe.
if [ "$np" -gt "$(nproc)" ]; then args+=(--oversubscribe); fi
# Forward the site's network settings to every rank.
for var in NCCL_SOCKET_IFNAME NCCL_IB_HCA NCCL_IB_GID_INDEX NCCL_NET_GDR_LEVEL NCCL_DEBUG \
           CUDA_VISIBLE_DEVICES OMP_NUM_THREADS; do
  if [ -n "${!var:-}" ]; then args+=(-x "$var"); fi
done
read -r -a user_args <<<"${MPIRUN_ARGS:-}"

echo "tessera: $np ranks (tp=$tp pp=$pp dp=$dp), backend $backend, output $output" >&2
set -x
exec "$mpirun" "${args[@]}" "${user_args[@]}" "$bin" generate \
  --model "$model" --prompts "$prompts" --output "$output" --backend "$backend" \
  --tp "$tp" --pp "$pp" --dp "$dp" "$@"
