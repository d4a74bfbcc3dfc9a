"""benchmarks/gpu_suite.sh at its tiny size on the CPU: every part runs and writes well-formed results, so that the
prepared GPU run cannot fail for a trivial reason."""

import json
import os
import subprocess

from helpers import ROOT


def test_tiny_gpu_suite_writes_every_table_and_json(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_SUITE_SIZE": "tiny", "OUT": str(out), "GPU_SUITE_WORK": str(tmp_path / "work")}
    completed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--no-install"], env=env,
                               capture_output=True, text=True, timeout=1500)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    suite = json.loads((out / "suite.json").read_text())
    assert suite["size"] == "tiny" and suite["device"]["cuda"] is False
    parts = suite["parts"]
    assert set(parts) == {"bench_train_cnn", "bench_sample", "time_to_quality", "experiments"}
    failed = {name: (out / f"{name}.log").read_text()[-2000:] for name, part in parts.items() if part["status"] != "done"}
    assert not failed, failed

    train = json.loads((out / "bench_train_cnn.json").read_text())["models"]["cnn"]
    assert set(train["setups"]) == {"a", "b", "c"} and train["a/b"] > 0 and train["a/c"] > 0
    assert all(setup["ms_per_step"] > 0 and setup["images_per_s"] > 0 for setup in train["setups"].values())

    sample = json.loads((out / "bench_sample.json").read_text())
    assert [(r["sampler"], r["compile"]) for r in sample["results"]] == [("dpmsolver-20", "off"), ("cold-28", "off")]
    assert all(r["images_per_s"] > 0 for r in sample["results"]) and not sample["gaps"]

    curve = json.loads((out / "time_to_quality" / "curve.json").read_text())
    assert curve["points"] and "digit_fd" in curve["points"][0]
    assert (out / "time_to_quality" / "curve.png").is_file()

    table = (out / "experiments" / "results.md").read_text()
    assert "1 of 1 rows done" in table and "PARTIAL" not in table
    assert (out / "experiments" / "results.csv").is_file() and (out / "experiments" / "figures" / "exp_linear.png").is_file()
