"""benchmarks/gpu_suite.sh at its tiny size on the CPU: both runs and every part write well-formed results, so that
the prepared GPU runs cannot fail for a trivial reason; and a part killed mid-way leaves the rows it finished."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from helpers import ROOT


def test_tiny_gpu_suite_writes_every_table_and_json(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_SUITE_SIZE": "tiny", "OUT": str(out), "GPU_SUITE_WORK": str(tmp_path / "work")}
    # Each run alone, as on the device; side by side here, as each part of the tiny size uses one thread.
    runs = {run: subprocess.Popen(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), run], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for run in ("bench", "table")}
    for run, process in runs.items():
        output, _ = process.communicate(timeout=1500)
        assert process.returncode == 0, f"{run}: {output}"
    assert sorted(path.name for path in out.iterdir()) == [f"suite-{run}.{kind}" for run in ("bench", "table") for kind in ("json", "log", "tar.gz")]
    results = tmp_path / "results"
    for run in ("bench", "table"):
        with tarfile.open(out / f"suite-{run}.tar.gz") as tar:
            tar.extractall(results, filter="data")

    parts = {}
    for run, expected in (("bench", {"device", "bench_train", "bench_sample", "time_to_quality"}), ("table", {"device", "experiments"})):
        suite = json.loads((out / f"suite-{run}.json").read_text())
        assert suite == json.loads((results / f"suite-{run}" / "suite.json").read_text())
        assert suite["run"] == run and suite["size"] == "tiny" and suite["device"]["cuda"] is False
        assert set(suite["parts"]) == expected  # the table finished: nothing to collect after it
        parts.update({(run, name): part for name, part in suite["parts"].items()})
    failed = {name: (results / f"suite-{run}" / f"{name}.log").read_text()[-2000:] for (run, name), part in parts.items() if part["status"] != "done"}
    assert not failed, failed

    bench = results / "suite-bench"
    train = json.loads((bench / "bench_train.json").read_text())
    assert train["finished"] and train["models"]["cnn"]["rounds_done"] == 1
    cnn = train["models"]["cnn"]
    assert set(cnn["setups"]) == {"a", "b", "c"} and cnn["a/b"] > 0 and cnn["a/c"] > 0
    assert all(setup["ms_per_step"] > 0 and setup["images_per_s"] > 0 for setup in cnn["setups"].values())
    assert all(len(setup["ms_per_step_rounds"]) == 1 for setup in cnn["setups"].values())
    assert cnn["setups"]["b"]["data_ms_per_batch"] == 0 and cnn["setups"]["c"]["data_ms_per_batch"] > 0  # (b) fetches no data

    sample = json.loads((bench / "bench_sample.json").read_text())
    assert [(r["sampler"], r["compile"]) for r in sample["results"]] == [("dpmsolver-20", "off"), ("cold-28", "off")]
    assert all(r["images_per_s"] > 0 and r["peak_memory_mb"] >= 0 and r["batch_size"] == 2 for r in sample["results"]) and not sample["gaps"]

    curve = json.loads((bench / "time_to_quality" / "curve.json").read_text())
    assert curve["finished"] and curve["points"] and "digit_fd" in curve["points"][0]
    assert (bench / "time_to_quality" / "curve.png").is_file()

    table_dir = results / "suite-table" / "experiments"
    table = (table_dir / "results.md").read_text()
    assert "1 of 1 rows done" in table and "PARTIAL" not in table
    assert (table_dir / "results.csv").is_file() and (table_dir / "figures" / "exp_linear.png").is_file()


def test_the_suite_refuses_a_missing_run_name():
    completed = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], capture_output=True, text=True)
    assert completed.returncode == 2 and "bench, table or all" in completed.stderr


def _has_rows(report: dict) -> bool:
    return bool(report["results"])


def _has_a_round(report: dict) -> bool:
    return any(model["rounds_done"] for model in report["models"].values())


@pytest.mark.parametrize("script, flags, finished_rows", [
    # Rows in fresh processes: killed once the first is written (the second, a 1,000-step sampler, is still running).
    ("bench_sample.py", ["--models", "cnn", "--samplers", "cold-28", "ddpm-1000", "--batch_size", "2", "--ddpm_batch_size", "64"], _has_rows),
    # Rounds that would take hours: killed once the first round is written; the first steps (compile times) are there.
    ("bench_train.py", ["--models", "cnn", "--setups", "a", "b", "--rounds", "100000", "--steps", "1", "--warmup", "1", "--batch_size", "8"], _has_a_round),
], ids=["bench_sample", "bench_train"])
def test_a_benchmark_killed_mid_way_leaves_its_finished_rows(tmp_path, script, flags, finished_rows):
    output = tmp_path / "report.json"
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / script), *flags, "--threads", "1", "--output", str(output)],
                               env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # its own process group, as `timeout` stops a part
    try:
        deadline = time.monotonic() + 300
        while not (output.is_file() and finished_rows(json.loads(output.read_text()))):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no finished row within 300 s"
            time.sleep(0.2)  # each read parses: the report is never seen half-written
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the harshest stop: no handler runs
        process.wait()
    report = json.loads(output.read_text())
    assert report["finished"] is False and finished_rows(report)
    if script == "bench_train.py":
        setups = report["models"]["cnn"]["setups"]
        assert set(setups) == {"a", "b"} and all(s["first_step_s"] > 0 and s["ms_per_step"] > 0 for s in setups.values())
    else:
        assert report["results"][0]["sampler"] == "cold-28" and report["results"][0]["images_per_s"] > 0
