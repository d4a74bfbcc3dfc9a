"""A run folder belongs to one run, and a resume continues the same run (issue 17, sections 2 and 3)."""

import json
import os
import socket
import subprocess
import sys
import warnings

import pytest
from helpers import TINY_RUN, make_folder

from diffusion_lab.commands import run_command, train_ddpm
from diffusion_lab.training.run_folder import LOCK_NAME, RunFolderBusy, RunLock

SHORT = [*TINY_RUN, "--max_train_samples", "32", "--train_batch_size", "8", "--eval_batch_size", "2",
         "--num_inference_steps", "2"]


def run(capsys, *argv):
    """A command as its console script runs it: (exit status, stderr lines)."""
    capsys.readouterr()
    try:
        run_command(train_ddpm.main, list(map(str, argv)))
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    return status, [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]


def snapshot(folder):
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "start": None, "since": "then"}))
        status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 1)
        assert status == 2 and lines == [
            f"error: --output_dir {folder} is in use by another training run (pid {holder.pid} on {socket.gethostname()}, "
            f"since then): wait for it to end or choose another --output_dir; if that run is gone, delete {folder / LOCK_NAME}."]
        assert sorted(path.name for path in folder.iterdir()) == [LOCK_NAME]  # nothing written, the lock kept
        # The same lock from another host cannot be checked: refused too.
        (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
        with pytest.raises(RunFolderBusy, match="pid 1 on elsewhere"):
            RunLock(folder).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_crashed_runs_stale_lock_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "start": "1", "since": "then"}))
    lock = RunLock(folder)
    lock.acquire()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    # A live pid that now belongs to a process started at another time (a reused pid) is stale as well.
    (folder / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": "1", "since": "then"}))
    RunLock(folder).acquire()
    lock.release()  # not its lock any more: left alone
    assert (folder / LOCK_NAME).exists()


def test_the_lock_is_held_during_the_run_and_released_after(tmp_path):
    folder = tmp_path / "run"
    seen = []
    args = train_ddpm.parse_args(["--output_dir", str(folder), *SHORT, "--max_train_steps", "1"])
    trainer = train_ddpm.run_training.__globals__["Trainer"](args, train_ddpm.DDPMObjective.from_args(args), ["train_ddpm.py"])
    seen.append(json.loads((folder / LOCK_NAME).read_text())["pid"])
    with pytest.raises(RunFolderBusy, match="is in use by another training run"):
        RunLock(folder).acquire()  # the same process, another lock: refused while the run holds it
    trainer.train()
    trainer.release_run_folder()
    assert seen == [os.getpid()] and not (folder / LOCK_NAME).exists()


def test_overwrite_moves_the_whole_earlier_run_aside_and_says_where(tmp_path, capsys):
    folder = tmp_path / "run"
    assert run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 2, "--checkpointing_steps", 1)[0] == 0
    old = snapshot(folder)
    status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 1, "--overwrite_output_dir", "--checkpointing_steps", 5)
    aside = [path for path in tmp_path.iterdir() if path.name.startswith("run.replaced-")]
    assert status == 0 and len(aside) == 1
    assert f"--overwrite_output_dir: moved the earlier run in {folder} to {aside[0]} (nothing was deleted" in "\n".join(lines)
    # Nothing of the old run is left for a resume, the plot or the upload: no checkpoint, one step of metrics.
    assert not list(folder.glob("checkpoint-*"))
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines() if "loss" in line][:1] == [1]
    status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 3, "--resume_from_checkpoint", "latest")
    assert status == 2 and "no complete checkpoint in" in lines[-1]
    # The old run is whole, where the message said.
    assert {path.relative_to(folder): data for path, data in old.items()} == {
        path.relative_to(aside[0]): data for path, data in snapshot(aside[0]).items()}


def test_any_earlier_output_counts_and_a_refused_run_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)  # a run killed before its first metrics line
    (folder / "samples" / "epoch_0001.png").write_bytes(b"png")
    status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 1)
    assert status == 2 and lines == [f"error: --output_dir {folder} already holds a run (samples): pass --resume_from_checkpoint "
                                     "latest to continue it, --overwrite_output_dir to replace it, or another --output_dir."]
    # A folder this command created for a run that failed a check is removed again.
    new = tmp_path / "new"
    status, lines = run(capsys, "--output_dir", new, *SHORT, "--max_train_steps", 1, "--image_column", "picture")
    assert status == 2 and "column 'picture' not found" in lines[-1] and not new.exists()


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A finished two-step run with EMA and checkpoint-2 (copied by each test that changes it)."""
    folder = tmp_path_factory.mktemp("resume") / "run"
    train_ddpm.main(["--output_dir", str(folder), *SHORT, "--use_ema", "--max_train_steps", "2", "--checkpointing_steps", "2"])
    return folder


def copy_of(folder, tmp_path):
    import shutil

    shutil.copytree(folder, tmp_path / "run")
    return tmp_path / "run"


RESUME = ["--use_ema", "--resume_from_checkpoint", "latest", "--max_train_steps", 3]


def test_resume_with_other_settings_is_refused_naming_each_flag(two_steps, tmp_path, capsys):
    folder = copy_of(two_steps, tmp_path)
    before = snapshot(folder)
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME, "--seed", 1, "--learning_rate", "3e-3", "--ddpm_num_steps", 500)
    assert status == 2 and lines == [
        "error: checkpoint-2 was trained with other settings: --seed 0 (this run: 1), --learning_rate 0.002 (this run: "
        "0.003), --ddpm_num_steps 1000 (this run: 500): resume with the checkpoint's values, or start a new run "
        "(another --output_dir, or --overwrite_output_dir)."]
    assert snapshot(folder) == before  # training_args.json included: nothing is written before the checks pass
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME[:-1], "4", "--model", "unet")
    assert status == 2 and lines[-1].startswith("error: checkpoint-2 was trained with other settings: --model cnn (this run: unet):")
    # What may change on resume does: more steps, logging and checkpointing cadence, --max_grad_norm.
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME, "--logging_steps", 1, "--checkpointing_steps", 3, "--max_grad_norm", "0.5")
    assert status == 0, lines
    assert json.loads((folder / "checkpoint-3" / "run_config.json").read_text())["learning_rate"] == 0.002


def test_a_checkpoint_file_that_changed_is_refused_by_the_manifest(two_steps, tmp_path, capsys):
    folder = copy_of(two_steps, tmp_path)
    state = folder / "checkpoint-2" / "random_states_0.pkl"
    data = bytearray(state.read_bytes())
    data[-20] ^= 1  # one bit: same size, different content
    state.write_bytes(bytes(data))
    before = snapshot(folder)
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and lines == [
        f"error: checkpoint {folder / 'checkpoint-2'} is damaged (random_states_0.pkl differs from what was written): pass an "
        "earlier checkpoint-<step> folder to --resume_from_checkpoint, or delete this one to make the previous one 'latest'."]
    state.write_bytes(bytes(data[:100]))
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and f"(random_states_0.pkl has 100 bytes, {len(data)} were written)" in lines[-1]
    assert {path: data for path, data in snapshot(folder).items() if path != state} == {p: d for p, d in before.items() if p != state}


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_in_a_checkpoint_is_refused_in_one_line(two_steps, tmp_path, capsys):
    import pickle

    from diffusion_lab.training.checkpoints import write_manifest

    folder = copy_of(two_steps, tmp_path)
    marker = tmp_path / "code-was-run"
    (folder / "checkpoint-2" / "optimizer.bin").write_bytes(pickle.dumps(Payload(marker)))
    write_manifest(folder / "checkpoint-2")  # an attacker who rewrote the manifest too
    with warnings.catch_warnings(record=True) as shown:  # what a console would print beside the line (pytest hides it)
        warnings.simplefilter("default")
        status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and len(lines) == 1, lines
    assert not [str(warning.message) for warning in shown if not issubclass(warning.category, DeprecationWarning)]
    assert lines[0].startswith(f"error: {folder / 'checkpoint-2'} holds optimizer/scheduler/RNG state that is not plain tensor data (")
    assert lines[0].endswith("): refused. Resume only from checkpoints your own runs wrote.")
    assert not marker.exists()


def test_the_ema_in_a_checkpoint_is_read_from_safetensors_only(two_steps, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from diffusion_lab.training.checkpoints import write_manifest

    folder = copy_of(two_steps, tmp_path)
    ema = folder / "checkpoint-2" / "model_ema"
    torch.save(load_file(ema / "diffusion_pytorch_model.safetensors"), ema / "diffusion_pytorch_model.bin")
    (ema / "diffusion_pytorch_model.safetensors").unlink()
    write_manifest(folder / "checkpoint-2")
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and len(lines) == 1 and "model_ema" in lines[0] and "pickled weights are never read" in lines[0], lines


def test_a_checkpoint_of_a_model_built_otherwise_is_refused_naming_the_difference(two_steps, tmp_path, capsys):
    """As a run of the previous unet_small (with its middle-block attention) resumed by this version would be."""
    from diffusion_lab.training.checkpoints import write_manifest

    folder = copy_of(two_steps, tmp_path)
    config_path = folder / "checkpoint-2" / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "hidden_channels": [16, 32, 32, 8]}))
    write_manifest(folder / "checkpoint-2")
    before = snapshot(folder)
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and lines == [
        "error: checkpoint-2's model is not the one this run builds: hidden_channels 16 32 32 8 (this run: 16 32 32 16): "
        "resume it with the diffusion-lab version that wrote it, or start a new run in another --output_dir."]
    assert snapshot(folder) == before


def test_train_cold_refuses_to_resume_a_ddpm_checkpoint(two_steps, tmp_path, capsys):
    from diffusion_lab.commands import train_cold

    folder = copy_of(two_steps, tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(train_cold.main, list(map(str, ["--output_dir", folder, *SHORT, *RESUME])))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and lines == [
        "error: checkpoint-2 was written by a DDPMObjective run (train_ddpm.py), this is a ColdObjective run: resume it "
        "with the script that wrote it, or start a new run in another --output_dir."]


def test_a_checkpoint_without_its_manifest_or_settings_is_refused_unless_the_user_accepts_it(two_steps, tmp_path, capsys):
    folder = copy_of(two_steps, tmp_path)
    (folder / "checkpoint-2" / "manifest.json").unlink()
    before = snapshot(folder)
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and lines == [
        f"error: {folder / 'checkpoint-2'} has no manifest.json, so neither its files nor its settings can be checked "
        "against this run: resume from a checkpoint that has them, or pass --allow_unchecked_resume to resume this one unchecked."]
    (folder / "checkpoint-2" / "run_config.json").unlink()  # deleting the settings too gets no further
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME)
    assert status == 2 and len(lines) == 1 and "has no manifest.json and no run_config.json" in lines[0]
    assert snapshot(folder).keys() == before.keys() - {folder / "checkpoint-2" / "run_config.json"}
    status, lines = run(capsys, "--output_dir", folder, *SHORT, *RESUME, "--allow_unchecked_resume")
    assert status == 0 and "warning: checkpoint-2 has no manifest.json and no run_config.json: resuming it unchecked (--allow_unchecked_resume)." in lines


def test_resuming_an_earlier_checkpoint_moves_the_later_ones_aside_and_says_where(tmp_path, capsys):
    folder = tmp_path / "run"
    assert run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 3, "--checkpointing_steps", 1)[0] == 0
    future = {name: snapshot(folder / name) for name in ("checkpoint-2", "checkpoint-3")}
    status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 3, "--checkpointing_steps", 100,
                        "--resume_from_checkpoint", folder / "checkpoint-1")
    aside = [path for path in tmp_path.iterdir() if path.name.startswith("run.abandoned-after-checkpoint-1-")]
    assert status == 0 and len(aside) == 1
    assert (f"resuming from checkpoint-1, not the run's latest checkpoint, starts a branch: moved checkpoint-2, "
            f"checkpoint-3 to {aside[0]} (nothing was deleted), so that 'latest' continues this branch.") in lines
    # Only the branch is left for 'latest'; the abandoned future is whole where the message said.
    assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-1"]
    assert {name: {path.relative_to(aside[0] / name): data for path, data in snapshot(aside[0] / name).items()} for name in future} == {
        name: {path.relative_to(folder / name): data for path, data in files.items()} for name, files in future.items()}


@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_an_output_dir_that_is_inside_or_contains_an_input_is_refused_before_anything_moves(where, tmp_path, capsys):
    data = make_folder(tmp_path / "data" / "images", count=4, size=(28, 28), mode="L").parent
    output = {"equal": data, "inside": data / "run", "containing": tmp_path}[where]
    before = snapshot(tmp_path)
    status, lines = run(capsys, "--output_dir", output, *SHORT, "--max_train_steps", 1, "--train_data_dir", data, "--overwrite_output_dir")
    relation = {"equal": "is", "inside": "is inside", "containing": "contains"}[where]
    assert status == 2 and lines == [
        f"error: --output_dir {output} {relation} the --train_data_dir {data}: the run would write among (and "
        "--overwrite_output_dir move aside) what it reads; choose an --output_dir apart from it."]
    assert snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [tmp_path / "data"]


def test_a_checkpoint_is_written_when_checkpointing_minutes_have_passed(tmp_path, capsys):
    folder = tmp_path / "run"
    # 0.0001 minutes (6 ms) pass in every step: a checkpoint after each, whatever --checkpointing_steps says.
    assert run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 2, "--checkpointing_steps", 100, "--checkpointing_minutes", "0.0001")[0] == 0
    assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 2, "--checkpointing_steps", 100, "--checkpointing_minutes", 0, "--overwrite_output_dir")[0] == 0
    assert not list(folder.glob("checkpoint-*"))


def test_a_resume_prints_no_warnings(tmp_path, capfd):
    """The default model and EMA: nothing of diffusers' about the EMA's settings in the model's config, nor about a
    config passed as a path."""
    import warnings

    folder = tmp_path / "run"
    flags = ["--output_dir", folder, *SHORT, "--model", "unet_fast", "--use_ema", "--checkpointing_steps", 1]
    assert run(capfd, *flags, "--max_train_steps", 1)[0] == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_command(train_ddpm.main, list(map(str, [*flags, "--max_train_steps", 2, "--resume_from_checkpoint", "latest"])))
    # Everything on stderr but progress bars, which redraw with carriage returns (a warning may share their line).
    printed = [part for part in capfd.readouterr().err.replace("\r", "\n").splitlines() if part.strip() and "it/s" not in part and "s/it" not in part]
    assert printed == []
    assert [str(warning.message) for warning in caught if not issubclass(warning.category, DeprecationWarning)] == []


@pytest.mark.parametrize("change", ["deleted", "moved"])
def test_a_run_folder_deleted_or_moved_while_training_stops_with_one_line(change, tmp_path, capfd):
    import shutil

    from diffusion_lab.training.loop import Trainer

    folder, moved = tmp_path / "run", tmp_path / "moved"

    def after_step(trainer):
        if trainer.global_step == 2:  # TensorBoard holds the unflushed log of step 2 for its writer thread
            if change == "deleted":
                shutil.rmtree(folder)
            else:  # and another folder in its place, which the run must not write into
                folder.rename(moved)
                folder.mkdir()

    def main(argv):
        args = train_ddpm.parse_args(argv)
        trainer = Trainer(args, train_ddpm.DDPMObjective.from_args(args), ["train_ddpm.py"])
        try:
            trainer.train(after_step=after_step)
        finally:
            trainer.release_run_folder()

    flags = ["--output_dir", folder, *SHORT, "--logger", "tensorboard", "--max_train_steps", 4, "--checkpointing_steps", 1]
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, list(map(str, flags)))
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
    assert exit_info.value.code == 1 and "Traceback (most recent call last):" not in lines, lines
    if change == "deleted":
        assert lines[-1] == (f"stopped: the run folder {folder} was deleted during training (noticed after step 3): no "
                             "checkpoint of this run is left to resume; rerun the command to start afresh.")
    else:
        assert lines[-1] == (f"stopped: the run folder {folder} was moved to {moved} and replaced by another folder during "
                             f"training (noticed after step 3); its last intact checkpoint is {moved / 'checkpoint-2'}: move "
                             "the folder back, then rerun the same command with --resume_from_checkpoint latest.")
        assert list(folder.iterdir()) == []  # nothing written into the folder that took its place
