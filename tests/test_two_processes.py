import json
import shutil

import torch
from helpers import ROOT, TINY_RUN, run_script
from safetensors.torch import load_file


def test_two_cpu_ranks_train_on_different_shards_in_sync(tmp_path):
    accelerate = shutil.which("accelerate")
    output_dir = tmp_path / "run"
    result = run_script(
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "29517", ROOT / "tests" / "two_process_worker.py", tmp_path,
        "--output_dir", output_dir, *TINY_RUN, "--max_train_steps", "6", "--train_batch_size", "16",
        env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    assert all(rank["world"] == 2 for rank in ranks)
    seen = [{i for batch in rank["indices"] for i in batch} for rank in ranks]
    assert len(ranks[0]["indices"]) == 6 and len(seen[0]) == 6 * 16
    assert seen[0].isdisjoint(seen[1])  # different shards
    weights = [load_file(tmp_path / f"weights_{r}.safetensors") for r in range(2)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # gradients were all-reduced
    saved = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(saved[k], weights[0][k]) for k in saved)  # the saved pipeline is the trained model
    assert ranks[0]["saves"] and not ranks[1]["saves"]  # only the main process wrote the pipeline
