#!/usr/bin/env bash
# The Slurm launch path, for real, on this machine: a private one-node Slurm cluster (its own
# munged, slurmctld and slurmd, config and state in a temporary folder, ports of its own, so it
# neither reads /etc/slurm nor disturbs another cluster on the machine) runs an sbatch job whose
# `srun --mpi=pmix -n 2` starts two tessera ranks (--tp 2). Checked:
#   1. the job's JSONL has the same token ids as a single-process run of the same prompts;
#   2. plain `srun` (no PMIx: every process is its own MPI world of 1 while SLURM_NTASKS=2) fails,
#      non-zero, with the message telling the user to use `srun --mpi=pmix`.
# The daemons are stopped by pid in every case (trap).
#
#   3. tessera run directly by the batch script (one process in a job of 2 tasks) fails with the
#      message telling the user to start it with `srun --mpi=pmix`.
#
#   bash tests/cluster/slurm_local_test.sh BUILD_DIR [CHECKS]   (from anywhere; needs root)
# CHECKS: comma-separated subset of pmix,plain,batch (default: all three).
# Exit 0: passed; 1: failed; 77: skipped (not root, or Slurm/munge cannot be installed).
# Following shared/reference/slurm_local.md.
set -u

usage="usage: bash tests/cluster/slurm_local_test.sh BUILD_DIR [pmix,plain,batch]"
build="${1:?$usage}"
checks=",${2:-pmix,plain,batch},"
want() { [[ "$checks" == *",$1,"* ]]; }
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(cd "$build" 2>/dev/null && pwd)" || { echo "$usage: no such build dir" >&2; exit 1; }
bin="$build/launcher/tessera"
model="$repo/tests/fixtures/models/llama2_mha"  # has a tokenizer.model (llama70b_gqa does not)
job_timeout_s="${SLURM_TEST_TIMEOUT_S:-120}"
[ -x "$bin" ] || { echo "FAIL: $bin is missing; build the tessera target first" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root (installs slurm-wlm/munge with apt-get, starts munged, slurmctld and" \
       "slurmd as root); run as root to test the Slurm path"
  exit 77
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge with apt-get ..."
  # A new machine may have no package lists yet: update once, then install.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; then
      echo "SKIP: apt-get install slurm-wlm munge failed (no package mirror?)"
      exit 77
    fi
  fi
fi

start_s=$(date +%s)
work="$(mktemp -d /tmp/tessera-slurm.XXXXXX)"
chmod 0755 "$work"
mkdir -p "$work/munge" "$work/etc" "$work/state" "$work/spool" "$work/log" "$work/run"
chmod 0700 "$work/munge"
export SLURM_CONF="$work/etc/slurm.conf"
failed=0
keep_work=0

stop_pidfile() {  # pid file, name: TERM, wait up to 5 s, then KILL
  local file="$1" name="$2" pid
  [ -s "$file" ] || return 0
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  echo "note: $name (pid $pid) ignored SIGTERM; sending SIGKILL"
  kill -9 "$pid" 2>/dev/null
}

cleanup() {
  # Jobs first (this cluster's only: SLURM_CONF points at it), then the daemons by pid.
  if [ -s "$work/run/slurmctld.pid" ]; then
    timeout 10 scancel --quiet --user=root >/dev/null 2>&1
  fi
  stop_pidfile "$work/run/slurmd.pid" slurmd
  stop_pidfile "$work/run/slurmctld.pid" slurmctld
  stop_pidfile "$work/munge/munged.pid" munged
  if [ "$failed" -ne 0 ] || [ "$keep_work" -ne 0 ]; then
    echo "logs kept in $work (log/, munge/munged.log, *.out)"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL: $*"
  failed=1
  for f in "$work/log/slurmctld.log" "$work/log/slurmd.log"; do
    [ -s "$f" ] && { echo "--- tail of $f"; tail -n 15 "$f"; }
  done
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])' \
    2>/dev/null || echo $((20000 + RANDOM % 20000))
}

# --- munge: a private daemon with its own key and socket ---------------------------------------
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$work/munge/munge.key"
sock="$work/munge/munge.socket"
munged --force --socket="$sock" --key-file="$work/munge/munge.key" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed" || fail "munged did not start (see $work/munge/munged.log)"
munge -S "$sock" -n | unmunge -S "$sock" 2>&1 | grep -q "STATUS: *Success" ||
  fail "munge -n | unmunge does not print STATUS: Success"

# --- slurm.conf --------------------------------------------------------------------------------
host="$(hostname -s)"
node_line="$(slurmd -C 2>/dev/null | head -n 1)"
case "$node_line" in
  NodeName=*) ;;
  *) node_line="NodeName=$host CPUs=$(nproc) RealMemory=1024" ;;
esac
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
[ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$((ctld_port + 1))
cat >"$SLURM_CONF" <<EOF
ClusterName=tesseratest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
$node_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES State=UP MaxTime=10
EOF

slurmctld || fail "slurmctld did not start"
slurmd || fail "slurmd did not start"
state=""
for _ in $(seq 1 60); do
  state="$(sinfo -h -o %T 2>/dev/null | head -n 1)"
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 0.5
done
case "$state" in
  idle*|mixed*|allocated*) ;;
  *) fail "the node did not become idle within 30 s (sinfo: \"$state\")" ;;
esac
echo "ok   one-node Slurm up in $(( $(date +%s) - start_s )) s (node $host, ports $ctld_port/$slurmd_port)"
# srun reads the configuration (ours, through SLURM_CONF) even to list its MPI plugins: asked
# before slurm.conf exists it fails on a machine without /etc/slurm, so ask only now.
if ! srun --mpi=list 2>&1 | grep -qw pmix; then
  fail "this Slurm has no pmix MPI plugin (srun --mpi=list: $(srun --mpi=list 2>&1 | tr '\n' ' '));" \
       "Debian 12's slurm-wlm-basic-plugins ships mpi_pmix.so; install it"
fi

# --- the reference: one process ----------------------------------------------------------------
cat >"$work/prompts.jsonl" <<'EOF'
{"prompt": "def fibonacci(n):", "id": "a"}
{"prompt": "The capital of France is", "id": "b"}
{"prompt": "Once upon a time", "id": "c", "max_new_tokens": 5}
EOF
gen_flags=(--model "$model" --prompts "$work/prompts.jsonl" --max-new-tokens 8 --threads 1)
(cd "$repo" && timeout 60 "$bin" generate "${gen_flags[@]}" --output "$work/ref.jsonl") \
  >"$work/ref.out" 2>&1 || { cat "$work/ref.out"; fail "the single-process reference run failed"; }

token_ids() {  # JSONL -> one "id: token ids" line per record, in file order
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r.get("id"), r["token_ids"])' "$1"
}

# --- sbatch job: srun --mpi=pmix with 2 ranks, then plain srun ---------------------------------
{
  echo "#!/bin/bash"
  echo "#SBATCH -N1"
  echo "#SBATCH -n2"
  echo "#SBATCH --overcommit"
  echo "#SBATCH --time=2"
  echo "#SBATCH --output=$work/job.out"
  echo "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  printf 'cd %q\n' "$repo"
  flags="$(printf '%q ' "$bin" generate "${gen_flags[@]}" --tp 2)"
  if want pmix; then
    echo "srun --mpi=pmix -n 2 --overcommit $flags --comm-timeout-s 30 --output $work/tp2.jsonl"
    echo 'echo "pmix exit $?"'
  fi
  if want plain; then  # MpiDefault=none: plain srun connects nothing
    echo "timeout 60 srun -n 2 --overcommit $flags --comm-timeout-s 10 >$work/plain.out 2>&1"
    echo 'echo "plain exit $?"'
  fi
  if want batch; then  # the batch step is one process of a 2-task job
    echo "timeout 60 $flags --comm-timeout-s 10 >$work/batch.out 2>&1"
    echo 'echo "batch exit $?"'
  fi
} >"$work/job.sbatch"
job_start=$(date +%s)
job_id="$(sbatch --parsable --chdir="$repo" "$work/job.sbatch")" || fail "sbatch failed"
job_state=""
while :; do
  job_state="$(scontrol show job -o "$job_id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)"
  case "$job_state" in
    COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;;
  esac
  if [ $(( $(date +%s) - job_start )) -ge "$job_timeout_s" ]; then
    [ -f "$work/job.out" ] && cat "$work/job.out"
    fail "job $job_id still ${job_state:-unknown} after ${job_timeout_s} s"
  fi
  sleep 0.5
done
job_s=$(( $(date +%s) - job_start ))
echo "ok   job $job_id ran in ${job_s} s (state $job_state)"

if want pmix; then
  grep -q "^pmix exit 0$" "$work/job.out" || {
    cat "$work/job.out"
    fail "srun --mpi=pmix -n 2 tessera generate --tp 2 did not exit 0"
  }
  if [ "$(token_ids "$work/tp2.jsonl")" != "$(token_ids "$work/ref.jsonl")" ]; then
    echo "reference:"; token_ids "$work/ref.jsonl"
    echo "srun --mpi=pmix tp=2:"; token_ids "$work/tp2.jsonl"
    fail "the tp=2 job's token ids differ from the single-process run"
  fi
  echo "ok   srun --mpi=pmix -n 2 --tp 2: token ids equal the single-process run" \
       "($(wc -l <"$work/tp2.jsonl") prompts)"
fi

expect_pmix_hint() {  # check name, what was run
  local name="$1" what="$2" code
  code="$(sed -n "s/^$name exit //p" "$work/job.out")"
  if [ -z "$code" ] || [ "$code" -eq 0 ]; then
    cat "$work/job.out" "$work/$name.out"
    fail "$what did not fail (exit ${code:-none})"
  fi
  if [ "$code" -eq 124 ]; then
    cat "$work/$name.out"
    fail "$what hung (killed after 60 s) instead of failing"
  fi
  if ! grep -q "tessera: error: .*srun --mpi=pmix" "$work/$name.out"; then
    echo "--- output of $what:"
    cat "$work/$name.out"
    fail "$what failed (exit $code) without tessera telling the user to use srun --mpi=pmix"
  fi
  echo "ok   $what: exit $code with: $(grep -m1 -o 'tessera: error: .*' "$work/$name.out" | cut -c1-150)..."
}
if want plain; then expect_pmix_hint plain "plain srun -n 2 (no --mpi=pmix)"; fi
if want batch; then expect_pmix_hint batch "tessera run directly by the batch script"; fi

echo "passed in $(( $(date +%s) - start_s )) s"
