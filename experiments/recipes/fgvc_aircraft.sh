#!/bin/bash
# The U-Net report's FGVC-Aircraft setup (a GPU run; `bash experiments/recipes/fgvc_aircraft.sh [IMAGE_FOLDER]`).
# Report: U-Net with time embeddings, dropout 0.01, SmoothL1 loss, Adam at 2e-4, batch 32, linear betas 1e-4 -> 0.02,
# T = 500, 10,000 images, 20 epochs, scored with the Inception Score.
# Ours: the unet_fgvc_aircraft preset, 64x64 RGB (64 -> 32 -> 16 -> 8, attention at 16x16, 25.3 M parameters); images
# resized on their shorter side to 64 and centre-cropped (the report does not state its resolution: 64 is our
# preset's). FID and IS (± std over 10 splits) after every epoch when Inception weights are available
# (INCEPTION_WEIGHTS=path, or torch hub's cache); otherwise the log says they were skipped.
# Data: with an argument, a local folder of images, e.g. fgvc-aircraft-2013b/data/images from the official archive,
# which holds all 10,000 images (5 % are held out for the validation loss); without one, the Hub copy
# HuggingFaceM4/FGVC-Aircraft, whose train split has 3,334 images (its test split is the validation set).
# The tests run this same flag list on a generated folder of RGB images (tests/test_report_recipes.py).
set -eu
REPORT_FLAGS=(--model unet_fgvc_aircraft --resolution 64 --center_crop --dropout 0.01 --loss smooth_l1 --optimizer adam --learning_rate 2e-4 --lr_scheduler constant --lr_warmup_steps 0 --no-use_ema --train_batch_size 32 --noise_schedule linear --beta_start 1e-4 --beta_end 0.02 --ddpm_num_steps 500 --num_epochs 20 --random_flip --eval_every_epochs 1 --eval_num_samples 1000 --snr_gamma 0 --timestep_sampling uniform --cluster_conditioning 0 --autoguidance_scale 1)
if [ $# -ge 1 ]; then DATA=(--train_data_dir "$1"); else DATA=(--dataset_name HuggingFaceM4/FGVC-Aircraft); fi
INCEPTION=(); if [ -n "${INCEPTION_WEIGHTS:-}" ]; then INCEPTION=(--inception_weights "$INCEPTION_WEIGHTS"); fi
accelerate launch train_ddpm.py "${DATA[@]}" "${REPORT_FLAGS[@]}" "${INCEPTION[@]}" --output_dir ddpm-fgvc-aircraft
