#!/bin/bash
# The experiment table with its variants in five parallel groups, for a machine with room for several runs at once
# (a GPU): `bash experiments/run_in_parallel.sh medium`. Each group is one runner over disjoint --only variants in the
# same folder; a last plain run then does whatever the groups left (a variant not named below, an interrupted row:
# finished work is never redone) and writes the table and figures.
set -u
budget=${1:-medium}
output_dir=runs/experiments/$budget
mkdir -p "$output_dir"
# Decode the MNIST cache once, before the groups share it.
python train_ddpm.py --output_dir "$output_dir/warm-up" --overwrite_output_dir --max_train_steps 1 --train_batch_size 8 \
  --num_inference_steps 1 --eval_batch_size 4 --logger none > "$output_dir/warm-up.log" 2>&1 || { tail -5 "$output_dir/warm-up.log"; exit 1; }
group() {
  python -m diffusion_lab.experiments --budget "$budget" --output_dir "$output_dir" --only "$@" > "$output_dir/group_$1.log" 2>&1
  echo "group $1: exit $?"
}
group unet linear_cnn_unet_time unet_report_mnist &
group cnn_large linear linear_cnn_report geometric &
group cosine_custom des_batch des_image t1500_lr4e-4 t300_smooth_l1 &
group cold_rows_g4 cold_rows_g1 &
group cold_columns_g4 cold_columns_g1 &
wait
python -m diffusion_lab.experiments --budget "$budget" --output_dir "$output_dir"
