import json

import torch
from helpers import TINY_RUN, run_two_cpu_ranks
from safetensors.torch import load_file


def test_two_cpu_ranks_train_on_different_shards_in_sync(tmp_path):
    output_dir = tmp_path / "run"
    result = run_two_cpu_ranks(tmp_path, 29517, "--output_dir", output_dir, *TINY_RUN, "--max_train_steps", "6", "--train_batch_size", "16")
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
