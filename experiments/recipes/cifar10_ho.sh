#!/bin/bash
# The CIFAR-10 trainer report's setup (a GPU run; `bash experiments/recipes/cifar10_ho.sh [IMAGE_FOLDER]`).
# Report: Ho et al.'s CIFAR-10 model trained with AdamW, a learning-rate warm-up then cosine decay, gradient clipping,
# and one checkpoint kept per epoch.
# Ours: the unet_cifar10 preset (Ho et al.: 128 channels x (1, 2, 2, 2), attention at 16x16, dropout 0.1, 35.7 M
# parameters), 32x32 RGB, random horizontal flips, linear betas 1e-4 -> 0.02 with T = 1000, EMA; the numbers the report
# does not restate are Ho et al.'s (learning rate 2e-4, 5,000 warm-up steps, batch 128, clipping at norm 1, EMA 0.9999).
# --keep_epoch_checkpoints writes and keeps checkpoint-<step> at the end of every epoch (390 steps at batch 128).
# FID and IS (± std over 10 splits) every 10 epochs when Inception weights are available (INCEPTION_WEIGHTS=path or
# torch hub's cache). Data: the Hub's uoft-cs/cifar10 (column img; test split = validation), or a local image folder.
set -eu
REPORT_FLAGS=(--model unet_cifar10 --resolution 32 --random_flip --optimizer adamw --learning_rate 2e-4 --adam_weight_decay 0.0 --lr_scheduler cosine --lr_warmup_steps 5000 --max_grad_norm 1.0 --train_batch_size 128 --use_ema --ema_max_decay 0.9999 --noise_schedule linear --beta_start 1e-4 --beta_end 0.02 --ddpm_num_steps 1000 --num_epochs 2000 --keep_epoch_checkpoints --checkpointing_steps 5000 --checkpoints_total_limit 2 --eval_every_epochs 10 --eval_num_samples 10000 --snr_gamma 0 --timestep_sampling uniform --cluster_conditioning 0 --autoguidance_scale 1)
if [ $# -ge 1 ]; then DATA=(--train_data_dir "$1"); else DATA=(--dataset_name uoft-cs/cifar10 --image_column img); fi
INCEPTION=(); if [ -n "${INCEPTION_WEIGHTS:-}" ]; then INCEPTION=(--inception_weights "$INCEPTION_WEIGHTS"); fi
accelerate launch train_ddpm.py "${DATA[@]}" "${REPORT_FLAGS[@]}" "${INCEPTION[@]}" --output_dir ddpm-cifar10
