#!/usr/bin/env bash
# Installs the Debian 12 packages Tessera builds against, if any is missing. Idempotent.
# As root it runs apt-get; otherwise it prints the exact command to run and fails.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin
  libabsl-dev
  libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev
  libopenblas-dev
  libsentencepiece-dev
  nlohmann-json3-dev
  libcpp-httplib-dev
)
# For the fuzz step of scripts/test.sh (scripts/fuzz.sh): clang with libFuzzer. Optional: when
# they cannot be installed the build and tests still run and the fuzz step says it skipped.
optional_packages=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

optional_missing=()
for p in "${optional_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    optional_missing+=("$p")
  fi
done

install_optional() {
  [ ${#optional_missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "install_deps: optional packages missing (fuzzing is skipped without them):" \
         "${optional_missing[*]}; as root: apt-get install ${optional_missing[*]}" >&2
    return 0
  fi
  echo "install_deps: installing optional ${optional_missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         "${optional_missing[@]}"; then
    echo "install_deps: could not install ${optional_missing[*]}; fuzzing will be skipped" >&2
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  if [ ${#optional_missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq || true
  fi
  install_optional
  exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install_deps: missing packages: ${missing[*]}" >&2
  echo "install_deps: run as root:  $cmd" >&2
  exit 1
fi
echo "install_deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_optional
