#!/usr/bin/env bash
# README command 1: the whole PolyCL pipeline on the built-in synthetic demo dataset, CPU-sized (about 10 min on 2 cores).
# Creates/reuses ./.venv, installs the package, and uses ./work/demo for nnUNet_raw / _preprocessed / _results unless
# those variables are already set. Re-running reuses what is already there.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup_venv.sh"
source "$REPO/scripts/nnunet_folders.sh" demo
export nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-0}" nnUNet_def_n_proc="${nnUNet_def_n_proc:-2}"
ID=990
# fold 1: the demo's settings (pre-training, the _quick schedule) were chosen on fold 0; it reports on scans that none
# of those choices looked at (fold 1 shares no validation case with fold 0)
FOLD=1
UNLABELLED=200
DEVICE="${DEVICE:-cpu}"
SEEDS="${DEMO_SEEDS:-0 1 2 3 4}"
elapsed() { echo "$((SECONDS / 60)) min $((SECONDS % 60)) s"; }
step() { echo; echo "=== [demo] $* ($(elapsed) so far) ==="; }

step "1/7 demo dataset: 20 labelled scans and $UNLABELLED unlabelled ones (nnUNet_raw=$nnUNet_raw)"
RAW_DS="$nnUNet_raw/Dataset${ID}_PolyCLDemo"
if [ -d "$RAW_DS/imagesUnlabelled" ]; then
    echo "reusing $RAW_DS"
else  # also adds the unlabelled scans to a demo dataset written without them
    polycl_demo make-dataset -d "$ID" --unlabelled "$UNLABELLED"
fi

step "2/7 nnU-Net planning and preprocessing (2d)"
# -npfp 2: nnU-Net's default of 8 fingerprint workers each import nnU-Net anew; on 2 cores that doubles the step
nnUNet_n_proc_DA=1 nnUNetv2_plan_and_preprocess -d "$ID" -c 2d -np 2 -npfp 2 --verify_dataset_integrity

step "3/7 PolyCL pre-training of the nnU-Net 2D encoder (strategy O, fold $FOLD's 16 training scans + $UNLABELLED unlabelled)"
# the unlabelled scans' organ status comes from their weak labels (first and last slice with the organ); lr 1e-3:
# with the paper's 1e-4 an encoder on small scans memorises them before it learns anything that transfers.
# 2 torch threads on any machine: the thread count changes the floating-point sums, so the shared encoder (and every
# number of step 8) is the same on every CPU with the same software
OMP_NUM_THREADS=2 polycl_pretrain -d "$ID" -f "$FOLD" -s O --epochs 2 --lr 1e-3 --batch-size 16 --num-workers 0 \
    --unlabelled "$RAW_DS/imagesUnlabelled" --organ-slices "$RAW_DS/imagesUnlabelled_organ_slices.csv" \
    -device "$DEVICE" --c
PRETRAINING="$nnUNet_results/Dataset${ID}_PolyCLDemo/PolyCL_O__nnUNetPlans__2d/fold_$FOLD"

step "4/7 does the encoder transfer to scans it never saw? (polycl_probe on fold $FOLD's validation scans)"
polycl_probe "$PRETRAINING" --random 5 | tee "$WORK/probe.txt"

step "5/7 few labels: baseline against PolyCL-O fine-tuned layer-wise on 1 labelled scan to the end of training, seeds $SEEDS (polycl_experiment --preset demo)"
EXP="$nnUNet_results/Dataset${ID}_PolyCLDemo/PolyCL_experiment__demo__fold_$FOLD"
# each run is one nnUNetv2_train with a PolyCL trainer (its log: $EXP/runs/<run>/finetune.log), the _quick schedule
# (50 passes over the labelled slices at batch 4: 250-350 Adam steps at k = 1); the preset fine-tunes O layer-wise
# (its encoder at 0.1 x the decoder's rate: the adaptation chosen on fold 0) and the baseline on the default
# (nnUNetTrainerPolyCL_O_quick_layerwise_k1_seed<s> against ..._Baseline_quick_k1_seed<s>); --budgets 0.5 1: every run
# is also validated halfway through its schedule (same run, its checkpoint at that epoch), so that the comparison says
# whether the baseline reached the end of its training
# shellcheck disable=SC2086
polycl_experiment -d "$ID" -f "$FOLD" --preset demo --seeds $SEEDS --pretrained "O=$PRETRAINING/pretrained_weights.pth" \
    --budgets 0.5 1 -device "$DEVICE" -o "$EXP" --no-progress > "$WORK/experiment.log" 2>&1 \
    || { tail -40 "$WORK/experiment.log"; exit 1; }
cat "$EXP/reports/table1.md"

# the first seed's PolyCL-O run: its nnUNet_results folder, trainer, labelled scan and nnU-Net's own validation folder
FIRST_SEED="${SEEDS%% *}"
read -r O_RESULTS O_TRAINER O_LABELLED O_VALIDATION < <(python - "$EXP" "$FIRST_SEED" <<'PY'
import glob, json, os, sys
exp, seed = sys.argv[1], int(sys.argv[2])
for path in sorted(glob.glob(os.path.join(exp, "runs", "*", "finished.json"))):
    run = json.load(open(path))
    if run["method"] == "O" and run["seed"] == seed:
        validation = run["predictions"]  # <nnUNet_results>/<dataset>/<trainer>__<plans>__2d/fold_<f>/validation
        results = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(validation))))
        print(results, run["trainer"], ",".join(run["labelled_cases"]), validation)
PY
)
[ -n "$O_RESULTS" ] || { echo "No finished PolyCL-O run of seed $FIRST_SEED in $EXP/runs: see $WORK/experiment.log"; exit 1; }

step "6/7 prediction with nnUNetv2_predict from that model: PolyCL-O, seed $FIRST_SEED, fine-tuned on 1 labelled scan ($O_LABELLED)"
PRED="$WORK/predictions_PolyCL_O"
python - "$RAW_DS" "$WORK/val_images" "$FOLD" <<'PY'
import json, os, shutil, sys
from os.path import join
raw, out, fold = sys.argv[1], sys.argv[2], int(sys.argv[3])
splits = json.load(open(join(os.environ["nnUNet_preprocessed"], os.path.basename(raw), "splits_final.json")))
os.makedirs(out, exist_ok=True)
for case in splits[fold]["val"]:
    shutil.copy(join(raw, "imagesTr", f"{case}_0000.nii.gz"), out)
PY
# one preprocessing and one export worker (-npp, -nps): on 2 cores, starting nnU-Net's default 3 + 3 costs more than
# they save for 4 small scans
echo "nnUNet_results=$O_RESULTS"
nnUNet_results="$O_RESULTS" nnUNetv2_predict -i "$WORK/val_images" -o "$PRED" -d "$ID" -c 2d -f "$FOLD" \
    -tr "$O_TRAINER" -device "$DEVICE" --disable_tta -npp 1 -nps 1

step "7/7 evaluation: Dice, HD and HD95 in mm"
# -np 1: 4 small scans are evaluated in this process faster than worker processes start
polycl_evaluate -ref "$RAW_DS/labelsTr" -pred "$PRED" -djfile "$RAW_DS/dataset.json" -o "$WORK/evaluation_PolyCL_O" --intersection --overwrite \
    -np 1

echo
echo "=== [demo] done in $(elapsed). Outputs ==="
echo "pre-training:  $PRETRAINING (probe: $PRETRAINING/probe.json, picture: $PRETRAINING/embeddings.png)"
echo "experiment:    $EXP/reports (table1, verdict, fig4, budgets, fig_budgets; its log: $WORK/experiment.log)"
echo "fine-tunings:  $EXP/runs/<run>/nnUNet_results (one nnU-Net results folder per run; seed $FIRST_SEED's PolyCL-O: $O_RESULTS)"
echo "predictions:   $PRED (nnUNetv2_predict, $O_TRAINER)"
echo "evaluation:    $WORK/evaluation_PolyCL_O/summary.md"
echo
python - "$WORK/evaluation_PolyCL_O/summary.json" "$O_VALIDATION/summary.json" "$O_TRAINER" <<'PY'
import json, sys
summary, own, trainer = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
dice, own_dice = summary["aggregates"]["liver"]["dice"], own["foreground_mean"]["Dice"]
print(f"nnUNetv2_predict with {trainer} (1 labelled scan): validation Dice {dice['mean']:.3f} (mean of {dice['n']} "
      f"cases, min {dice['min']:.3f}); nnU-Net's own validation of that run at the end of nnUNetv2_train: "
      f"{own_dice:.3f}.")
PY
python - "$EXP/reports/budgets.json" <<'PY'
import json, sys
table = json.load(open(sys.argv[1]))["comparisons"][0]
end = [e for e in table["rows"] if e["budget"] == 1.0]
steps = sorted({i for e in end for i in e["iterations"]})
steps = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
budget = f"{end[0]['epochs'][0]} epochs, {steps} Adam steps per run"
print(f"At the end of the fine-tuning budget ({budget}), k = 1: " + ", ".join(
    f"{e['method']} {e['dice']['mean']:.3f}" for e in end) + " validation Dice (mean over runs).")
PY
tail -n +3 "$EXP/reports/verdict.md"
grep "^End of training" "$EXP/reports/budgets.md"
if grep -q "^End of training.*: \*\*still training" "$EXP/reports/budgets.md"; then
    echo "By the rule the baseline was still training at the end of its budget here, so these numbers compare speed."
elif grep -q "^End of training.*: \*\*past its best" "$EXP/reports/budgets.md"; then
    echo "The baseline lost Dice over the second half of its budget here (past its best), so it is compared after its"
    echo "best point."
fi
if ! grep -q "^End of training.*: \*\*end of training\*\*" "$EXP/reports/budgets.md"; then
    echo "The comparison at the end of training with more steps (600 per run), 200 unlabelled scans, fold 1:"
    echo "documentation/evidence.md, section 0."
fi
echo "One pre-trained encoder served all 5 seeds, so the interval leaves out how much the result depends on the"
echo "pre-training's own randomness; the same comparison with one pre-training per seed, 10 seeds, on fold 1 and on"
echo "fold 2: documentation/evidence.md, section 0e (and 0d for S, and k = 2 and 4)."
