#!/bin/bash
# The packages the GPU machine lacks, as wheels in .whl/ of the repository root (ignored by git; about 8 MB), for
# benchmarks/gpu_suite.sh to install there without a package index. Pure-Python wheels for the device's Python 3.12;
# the versions are those the project is tested with (../shared/notes/device.md). datasets 5.2.0 needs pyarrow >= 24,
# which the device has (25.0.1).
#
#   bash benchmarks/fetch_gpu_wheels.sh        # then send .whl along: the device's `run` with carry [".whl"]
set -eu
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 datasets==5.2.0 dill==0.4.1 \
  multiprocess==0.70.19 "importlib_metadata<9" fsspec==2026.4.0
ls -l .whl
