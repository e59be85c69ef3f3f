#!/usr/bin/env bash
# Installs the Debian packages the tests need (speech synthesis, audio conversion, a browser, a
# C++ toolchain, Prometheus),
# only when missing. Needs root (CI and these machines run as root).
set -euo pipefail
# cmake and a C++ compiler build llama.cpp's llama-server once, for the remote-backend tests;
# Prometheus scrapes /metrics in its test.
declare -A need=([espeak-ng]=espeak-ng [sox]=sox [ffmpeg]=ffmpeg [chromium]=chromium [cmake]=cmake [c++]=g++
  [prometheus]=prometheus)
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
