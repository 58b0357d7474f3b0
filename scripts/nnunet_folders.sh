#!/usr/bin/env bash
# nnU-Net's three folders under ./work/NAME unless nnUNet_raw / _preprocessed / _results are already set; sets WORK.
# Usage: source scripts/nnunet_folders.sh NAME
WORK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/work/$1"
export nnUNet_raw="${nnUNet_raw:-$WORK/nnUNet_raw}"
export nnUNet_preprocessed="${nnUNet_preprocessed:-$WORK/nnUNet_preprocessed}"
export nnUNet_results="${nnUNet_results:-$WORK/nnUNet_results}"
export MPLBACKEND=Agg
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
