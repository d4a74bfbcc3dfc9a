#!/bin/bash
# The U-Net report's MNIST setup in full (`bash experiments/recipes/unet_report_mnist.sh`): our MNIST UNet preset with
# dropout 0.01, SmoothL1 loss, Adam at 2e-4, batch 32, linear betas 1e-4 -> 0.02, T = 300, 15 epochs (28,125 steps).
# The experiment table's row unet_report_mnist has the same flags at the table's budget (steps and batch size).
set -eu
REPORT_FLAGS=(--model unet --dropout 0.01 --loss smooth_l1 --optimizer adam --learning_rate 2e-4 --lr_scheduler constant --lr_warmup_steps 0 --no-use_ema --train_batch_size 32 --noise_schedule linear --beta_start 1e-4 --beta_end 0.02 --ddpm_num_steps 300 --num_epochs 15 --eval_every_epochs 5 --eval_num_samples 1000 --snr_gamma 0 --timestep_sampling uniform --cluster_conditioning 0 --autoguidance_scale 1)
accelerate launch train_ddpm.py "${REPORT_FLAGS[@]}" --output_dir ddpm-unet-report-mnist
