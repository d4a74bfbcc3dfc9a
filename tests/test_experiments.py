"""The experiment runner: at the tiny budget it trains, samples and scores each selected variant into a full table."""

import csv
import json

import pytest
from helpers import ROOT

from diffusion_lab.commands import experiments as experiments_command
from diffusion_lab.experiments import BUDGETS, load_variant, load_variants
from diffusion_lab.experiments.table import COLUMNS


def test_tiny_budget_produces_a_complete_table_and_resumes_without_redoing_work(tmp_path):
    output_dir = tmp_path / "tiny"
    argv = ["--budget", "tiny", "--only", "linear", "cold_rows_g4", "--configs_dir", str(ROOT / "experiments"),
            "--output_dir", str(output_dir), "--device", "cpu"]
    experiments_command.main(argv)

    with (output_dir / "results.csv").open() as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = {row["row"]: row for row in reader}
    cold_rows = [f"cold_rows_g4-{name}" for name in ("alg2_uncond", "alg1_uncond", "alg2_cond", "alg1_cond")]
    assert list(rows) == ["linear", *cold_rows]  # one row per variant and sampling, in the configs' order
    budget = BUDGETS["tiny"]
    for name, row in rows.items():
        assert row["status"] == "done", row
        assert int(row["num_samples"]) == budget.num_samples and int(row["train_steps"]) == budget.train_steps
        for metric in ("digit_fd", "digit_is", "digit_confidence", "psnr", "ssim", "train_loss", "val_loss"):
            float(row[metric])  # present and numeric
        conditional = name.endswith("_cond")
        assert (row["psnr_paired"] != "") == conditional and (row["ssim_paired"] != "") == conditional
        assert (output_dir / "figures" / f"exp_{name}.png").is_file()
    assert rows["linear"]["sampler"] == f"DDPM ancestral, {budget.num_inference_steps} steps"
    assert "Algorithm 1 (conditional)" in rows["cold_rows_g4-alg1_cond"]["sampler"]
    for figure in ("loss_linear.png", "loss_cold_rows_g4.png", "losses.png", "schedules.png", "grids.png"):
        assert (output_dir / "figures" / figure).is_file()
    markdown = (output_dir / "results.md").read_text()
    assert "PARTIAL" not in markdown and "5 of 5 rows done" in markdown and "real test images (floor)" in markdown

    # A second run finds every training and evaluation done and only rewrites the table.
    def finished_work():
        paths = [*output_dir.glob("runs/*/model_index.json"), *output_dir.glob("rows/*/*.json")]
        return {path: path.stat().st_mtime_ns for path in paths}

    finished = finished_work()
    assert len(finished) == 2 + 2 * 5  # a pipeline per variant; evaluation.json and row.json per row
    assert [row["row"] for row in experiments_command.main(argv)] == list(rows)
    assert finished_work() == finished

    # --collect rebuilds the table from finished rows only: a row whose evaluation is gone is listed, not redone.
    (output_dir / "rows" / "linear" / "row.json").unlink()
    collected = {row["row"]: row["status"] for row in experiments_command.main([*argv, "--collect"])}
    assert collected == {"linear": "not finished", **{name: "done" for name in cold_rows}}
    assert not (output_dir / "rows" / "linear" / "row.json").exists()
    assert "4 of 5 rows done" in (output_dir / "results.md").read_text()


def test_a_skipped_variant_marks_the_table_partial(tmp_path):
    (tmp_path / "configs").mkdir()
    config = {"script": "train_ddpm.py", "flags": ["--model", "cnn"], "skip_budgets": {"tiny": "too slow here"}}
    (tmp_path / "configs" / "big.json").write_text(json.dumps(config))
    rows = experiments_command.main(["--budget", "tiny", "--configs_dir", str(tmp_path / "configs"), "--output_dir", str(tmp_path / "out")])
    assert rows[0]["status"] == "not run at budget tiny: too slow here"
    assert "(PARTIAL)" in (tmp_path / "out" / "results.md").read_text()


def test_unknown_variants_and_config_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--only nope: no such variant; known: .*linear"):
        load_variants(ROOT / "experiments", only=["nope"])
    (tmp_path / "typo.json").write_text(json.dumps({"script": "train_ddpm.py", "flag": ["--model", "unet"]}))
    with pytest.raises(ValueError, match=r"typo.json: keys \['flag'\] are unknown"):
        load_variant(tmp_path / "typo.json")
    (tmp_path / "sampling.json").write_text(json.dumps({"script": "train_cold.py", "samplings": [{"name": "a", "algoritm": 1}]}))
    with pytest.raises(ValueError, match=r"sampling.json: a sampling has a key Sampling does not take"):
        load_variant(tmp_path / "sampling.json")
    (tmp_path / "script.json").write_text(json.dumps({"script": "train.py"}))
    with pytest.raises(ValueError, match=r"script.json: script 'train.py' is not a training script"):
        load_variant(tmp_path / "script.json")


def test_every_shipped_config_loads_and_names_an_existing_script():
    variants = load_variants(ROOT / "experiments")
    assert len({v.order for v in variants}) == len(variants)  # a definite run order
    for variant in variants:
        assert (ROOT / variant.script).is_file(), variant
    cold = [v for v in variants if v.is_cold and "--class_conditional" not in v.flags]
    assert {v.name for v in cold} == {"cold_rows_g4", "cold_rows_g1", "cold_columns_g4", "cold_columns_g1"}
    for variant in cold:  # each degradation with both algorithms, generating and restoring
        assert {(s.algorithm, s.conditional) for s in variant.samplings} == {(a, c) for a in (1, 2) for c in (False, True)}


def test_concurrency_is_the_fewest_runs_within_the_gain_of_the_best():
    from diffusion_lab.experiments.concurrency import choose_concurrency

    assert choose_concurrency({1: 100.0, 2: 190.0, 4: 300.0, 8: 310.0}) == 4  # 8 adds 3 %: not worth a slot
    assert choose_concurrency({1: 100.0, 2: 105.0}) == 1  # a busy device: one at a time
    assert choose_concurrency({1: 100.0, 2: 80.0}) == 1


def test_the_probe_times_concurrent_workers_together():
    from diffusion_lab.experiments.concurrency import probe

    result = probe("cnn", 4, "cpu", max_processes=2, seconds=0.3)
    assert set(result["steps_per_second"]) <= {1, 2} and 1 in result["steps_per_second"]
    assert all(value > 0 for value in result["steps_per_second"].values())
    assert result["concurrency"] in result["steps_per_second"]


def test_concurrent_variants_fill_the_same_table(tmp_path):
    output_dir = tmp_path / "tiny"
    argv = ["--budget", "tiny", "--only", "linear", "cold_rows_g4", "--configs_dir", str(ROOT / "experiments"),
            "--output_dir", str(output_dir), "--device", "cpu", "--concurrency", "2"]
    rows = experiments_command.main(argv)
    assert [row["row"] for row in rows] == ["linear", *(f"cold_rows_g4-{name}" for name in ("alg2_uncond", "alg1_uncond", "alg2_cond", "alg1_cond"))]
    assert all(row["status"] == "done" for row in rows), rows
    assert (output_dir / "runner_linear.log").is_file() and (output_dir / "runner_cold_rows_g4.log").is_file()
    assert "5 of 5 rows done" in (output_dir / "results.md").read_text()
