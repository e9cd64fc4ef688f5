#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine with Python 3.11 (root, or sudo available):
# the Debian packages the data needs, then a virtual environment in .venv with the pinned
# dependencies and the `tina` package. `bash setup.sh --test` adds what the tests need
# (pytest, ruff, snakefmt; SLURM and munge for the cluster test). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

debs=(wordnet-base dataset-fashion-mnist)
extras="."
if [[ "${1:-}" == "--test" ]]; then
    debs+=(slurm-wlm munge)
    extras=".[test]"
fi

missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e "$extras"
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/snakemake --version) snakemake)"
