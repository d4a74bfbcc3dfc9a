import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One thread per pytest-xdist worker (`-n 2` in pyproject.toml: two workers on two cores); more threads than cores make
# torch's thread pools wait on each other; the commands tests start in subprocesses get one too. Two without xdist.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1 if XDIST_WORKER else 2)


@pytest.fixture(scope="session", autouse=True)
def decoded_image_cache(tmp_path_factory):
    """One decoded-image cache for the whole session, away from the user's."""
    os.environ["DIFFUSION_LAB_CACHE"] = str(tmp_path_factory.mktemp("image_cache"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps its state in process-wide singletons; a real run makes one Accelerator per process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(autouse=True)
def empty_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own and must leave it empty: a command that reads a default input
    from, or writes a default output to, the current folder (an earlier `evaluation.json`...) fails its test instead
    of making another test flaky. Subprocesses started with `run_script` inherit this folder."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    yield folder
    left = sorted(path.name for path in folder.iterdir())
    assert not left, f"the test wrote {left} into the working directory: pass explicit output paths"
