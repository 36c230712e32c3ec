#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: the Debian tools the targets are tested with
# (aarch64 cross compiler, qemu-user, PoCL), then a virtualenv in .venv with edgekiln
# and its test extras.  Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server/-client: the ssh transport test runs against a loopback sshd; make builds the
# --emit c-library example.  gcc-arm-linux-gnueabihf + libc6-dev-armhf-cross (only recommended, so
# named): the 32-bit armv7 runtime (target cortex-a7, run by qemu-arm); clang: --toolchain clang.
debian_packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user pocl-opencl-icd ocl-icd-opencl-dev
                 openssh-server openssh-client make gcc-arm-linux-gnueabihf libc6-dev-armhf-cross clang)
missing=()
for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) comes with the test extra; the PP-OCR models ship in a wheel whose
# own dependencies would pull OpenCV, so it is installed without them.
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
echo "setup: done ($(.venv/bin/python -c 'import edgekiln; print("edgekiln", edgekiln.__version__)'))"
