"""Run by test_two_processes.py under `accelerate launch --multi_gpu --num_processes 2` on CPU.

Trains a tiny DDPM and records, per rank, the image indices it trained on, its final weights and whether it
saved the pipeline.
"""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.training import loop

record_dir = Path(sys.argv[1])
args = train_ddpm.parse_args(sys.argv[2:])
trainer = loop.Trainer(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])
rank = trainer.accelerator.process_index
seen, saves = [], []

original_indices = trainer.batches.indices
trainer.batches.indices = lambda epoch, batch: seen.append(original_indices(epoch, batch).tolist()) or original_indices(epoch, batch)
original_save = loop.save_pipeline
loop.save_pipeline = lambda *a, **k: saves.append(rank) or original_save(*a, **k)
trainer.train()

model = trainer.accelerator.unwrap_model(trainer.model)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, record_dir / f"weights_{rank}.safetensors")
(record_dir / f"rank_{rank}.json").write_text(json.dumps({"indices": seen, "saves": saves, "world": trainer.accelerator.num_processes}))
