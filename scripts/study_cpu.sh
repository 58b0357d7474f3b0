#!/usr/bin/env bash
# The reduced CPU label-efficiency study of the README ("What the evidence shows"): baseline against PolyCL-O on the
# demo dataset, fold 0, seeds 0-4; adaptations direct, warmup, decoderfirst and frozen at k = 1 and 4, direct at
# k = all. 90 fine-tuning runs and 5 pre-trainings: about 85 minutes on 2 CPU cores. Re-running continues (finished
# runs are skipped). Uses ./work/study for nnUNet_raw / _preprocessed / _results unless those are set.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_venv.sh"
source "$REPO/scripts/nnunet_folders.sh" study
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
ID=990
DEVICE="${DEVICE:-cpu}"
compgen -G "$nnUNet_raw/Dataset${ID}_PolyCLDemo" > /dev/null || polycl_demo make-dataset -d "$ID"
compgen -G "$nnUNet_preprocessed/Dataset${ID}_PolyCLDemo/nnUNetPlans.json" > /dev/null \
    || nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d "$ID" -c 2d -np 2 -npfp 2
export nnUNet_n_proc_DA=0
EXP="$nnUNet_results/Dataset${ID}_PolyCLDemo/PolyCL_experiment__study_cpu"
COMMON=(-d "$ID" --preset study -device "$DEVICE" --methods baseline O --schedule demo --jobs 2 --num-workers 0
        -o "$EXP" --no-progress)
polycl_experiment "${COMMON[@]}" --adaptations direct warmup decoderfirst frozen --k 1 4
polycl_experiment "${COMMON[@]}" --adaptations direct --k all
echo "reports: $EXP/reports (table1.md, schedules.md, verdict.md, fig4.png)"
