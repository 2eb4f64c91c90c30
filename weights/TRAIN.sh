#!/usr/bin/env bash
# The exact commands that produced the bundled weights (each card repeats its own command).
# Run from the repository root; logs go to weights/logs/.
set -euo pipefail
mkdir -p weights/logs
preempt train --method fast-at --norm linf --eps 0.1 --epochs 6 --threads 1 --seed 0 \
  -o weights/fmnist-linf-fastat.safetensors --run-dir runs/fmnist-linf-fastat 2>&1 | tee weights/logs/fmnist-linf-fastat.log
