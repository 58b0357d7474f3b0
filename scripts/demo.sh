#!/usr/bin/env bash
# README command 1: the whole PolyCL pipeline on the built-in synthetic demo dataset, CPU-sized (< 15 min on 2 cores).
# Creates/reuses ./.venv, installs the package, and uses ./work/demo for nnUNet_raw / _preprocessed / _results unless
# those variables are already set. Re-running reuses what is already there.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_venv.sh"
WORK="$REPO/work/demo"
export nnUNet_raw="${nnUNet_raw:-$WORK/nnUNet_raw}"
export nnUNet_preprocessed="${nnUNet_preprocessed:-$WORK/nnUNet_preprocessed}"
export nnUNet_results="${nnUNet_results:-$WORK/nnUNet_results}"
export nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-2}" nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}" MPLBACKEND=Agg
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
ID=990
DEVICE="${DEVICE:-cpu}"
step() { echo; echo "=== [demo] $* ==="; }

step "1/7 demo dataset (nnUNet_raw=$nnUNet_raw)"
if compgen -G "$nnUNet_raw/Dataset${ID}_PolyCLDemo" > /dev/null; then
    echo "reusing $nnUNet_raw/Dataset${ID}_PolyCLDemo"
else
    polycl_demo make-dataset -d "$ID"
fi

step "2/7 nnU-Net planning and preprocessing (2d)"
nnUNetv2_plan_and_preprocess -d "$ID" -c 2d -np 2 --verify_dataset_integrity

step "3/7 PolyCL pre-training of the nnU-Net 2D encoder (strategy O)"
polycl_pretrain -d "$ID" -s O --epochs "${PRETRAIN_EPOCHS:-3}" -device "$DEVICE" --c

step "4/7 fine-tuning inside nnU-Net: nnUNetv2_train $ID 2d 0 -tr nnUNetTrainerPolyCL_demo"
nnUNetv2_train "$ID" 2d 0 -tr nnUNetTrainerPolyCL_demo -device "$DEVICE" --c

step "5/7 prediction of the validation cases with nnUNetv2_predict"
RAW_DS="$(ls -d "$nnUNet_raw/Dataset${ID}_"*)"
PRED="$WORK/predictions_PolyCL_O"
python - "$RAW_DS" "$WORK/val_images" <<'PY'
import json, os, shutil, sys
from os.path import join
raw, out = sys.argv[1], sys.argv[2]
splits = json.load(open(join(os.environ["nnUNet_preprocessed"], os.path.basename(raw), "splits_final.json")))
os.makedirs(out, exist_ok=True)
for case in splits[0]["val"]:
    shutil.copy(join(raw, "imagesTr", f"{case}_0000.nii.gz"), out)
PY
nnUNetv2_predict -i "$WORK/val_images" -o "$PRED" -d "$ID" -c 2d -f 0 -tr nnUNetTrainerPolyCL_demo -device "$DEVICE" --disable_tta

step "6/7 evaluation: Dice, HD and HD95 in mm"
polycl_evaluate -ref "$RAW_DS/labelsTr" -pred "$PRED" -djfile "$RAW_DS/dataset.json" -o "$WORK/evaluation_PolyCL_O" --intersection --overwrite

step "7/7 the paper's comparison in small: baseline vs PolyCL-O (polycl_experiment --preset demo)"
EXP="$nnUNet_results/Dataset${ID}_PolyCLDemo/PolyCL_experiment__demo"
polycl_experiment -d "$ID" --preset demo --methods ${DEMO_METHODS:-baseline O} --k all -device "$DEVICE" -o "$EXP"

echo
echo "=== [demo] done. Outputs ==="
echo "pre-training:  $nnUNet_results/Dataset${ID}_PolyCLDemo/PolyCL_O__nnUNetPlans__2d/fold_0"
echo "fine-tuning:   $nnUNet_results/Dataset${ID}_PolyCLDemo/nnUNetTrainerPolyCL_demo__nnUNetPlans__2d/fold_0"
echo "predictions:   $PRED"
echo "evaluation:    $WORK/evaluation_PolyCL_O/summary.md"
echo "experiment:    $EXP/reports (table1.md / .csv / .json, results.json)"
