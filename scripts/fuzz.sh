#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) in ./build-fuzz (or
# $TESSERA_FUZZ_BUILD_DIR) and runs each for SECONDS (default 25) from its seed corpus; fails on
# any crash, leak or hang (tests/fuzz/run_fuzzers.sh prints the input and how to reproduce it).
# Where clang cannot build a fuzzer (scripts/install_deps.sh installs clang and
# libclang-rt-14-dev as root) it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-25}"
build_dir="${TESSERA_FUZZ_BUILD_DIR:-build-fuzz}"

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  > "$probe_dir/probe.cc"
if ! command -v clang++ >/dev/null 2>&1 ||
   ! clang++ -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cc" -o "$probe_dir/probe" \
       >"$probe_dir/log" 2>&1; then
  echo "fuzz: SKIPPED: clang++ cannot build libFuzzer targets here (install clang and"
  echo "fuzz: libclang-rt-14-dev, e.g. as root: bash scripts/install_deps.sh)"
  cat "$probe_dir/log" 2>/dev/null | head -3 | sed 's/^/fuzz:   /' || true
  exit 0
fi

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 -g: what libFuzzer's documentation suggests, and half the compile time of -O2.
cmake -S . -B "$build_dir" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DTESSERA_FUZZ=ON -DTESSERA_BUILD_TESTS=OFF -DTESSERA_MPI=OFF -DTESSERA_CUDA=OFF \
  -DTESSERA_NATIVE=OFF "${launcher[@]}" >/dev/null
targets=(safetensors_header_fuzzer safetensors_index_fuzzer model_config_fuzzer
         prompts_file_fuzzer eval_task_fuzzer run_config_fuzzer set_flag_fuzzer
         threshold_file_fuzzer)
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"
# One target per core: 8 targets x 25 s take about 100 s on CI's 2 cores.
TESSERA_FUZZ_JOBS="${TESSERA_FUZZ_JOBS:-$(nproc)}" bash tests/fuzz/run_fuzzers.sh "$build_dir" "$seconds"
