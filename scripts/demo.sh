#!/usr/bin/env bash
# The main job: train the digits-cnn reference model, compress it to INT8 (ONNX Runtime, OpenVINO,
# TensorRT Q/DQ), export, benchmark every variant against fp32, and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
.venv/bin/edgekit train digits-cnn -o out/digits.pt --overwrite
.venv/bin/edgekit compress out/digits.pt --int8 -o out/digits.bundle --overwrite
.venv/bin/edgekit bench out/digits.bundle --runtime ort,openvino --batch 1,8
