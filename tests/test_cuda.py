"""The core on a CUDA device: compression rounds, teacher fine-tuning, save/load, a search sharing one GPU.

Skipped where torch sees no GPU (CI); `benchmarks/gpu_check.sh` runs them on a GPU machine.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ladasearch.compress import count_parameters
from ladasearch.config import DataConfig, TeacherConfig, TrainConfig
from ladasearch.data import TASKS
from ladasearch.train.ladabert import compress_model
from ladasearch.serialize import load_compressed, save_compressed
from ladasearch.jobs.teacher import fine_tune

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SST2 = TASKS["sst2"]
FAST = dict(rounds=2, steps_per_round=3, final_steps=2, batch_size=8, eval_batch_size=8)


@pytest.fixture
def both(tiny_model, tiny_features, ratios_for):
    """The same 5x compression run on the CPU and on the GPU."""
    train, dev = tiny_features
    ratios = ratios_for(count_parameters(tiny_model), 5.0)
    cpu = compress_model(copy.deepcopy(tiny_model), train, dev, SST2, ratios, TrainConfig(**FAST), "cpu")
    gpu = compress_model(tiny_model, train, dev, SST2, ratios, TrainConfig(**FAST), "cuda")
    return cpu, gpu


def test_compression_rounds_run_on_the_gpu(both):
    cpu, gpu = both
    assert {p.device.type for p in gpu.student.parameters()} == {"cuda"}
    assert gpu.achieved_factor == pytest.approx(5.0, rel=0.01)
    assert [r.params for r in gpu.history] == [r.params for r in cpu.history]  # same counting rule
    # (the losses differ from the CPU run's by a few %: the two SVD routines pick different bases of
    # near-equal singular values, so magnitude pruning keeps different entries of A and B)
    assert all(0.0 <= r.score <= 1.0 and r.losses["loss"] > 0 for r in gpu.history)
    # the trained student computes the same logits on either device
    ids = torch.randint(1, 1000, (3, 12), device="cuda")
    student = gpu.student.eval()
    with torch.no_grad():
        on_gpu = student(input_ids=ids).logits.cpu()
        on_cpu = copy.deepcopy(student).cpu()(input_ids=ids.cpu()).logits
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4)


def test_saved_gpu_student_loads_onto_the_gpu_with_the_same_logits(both, tmp_path):
    _, gpu = both
    save_compressed(gpu.student, tmp_path / "m")
    loaded = load_compressed(tmp_path / "m", device="cuda")
    assert {p.device.type for p in loaded.parameters()} == {"cuda"}
    ids = torch.randint(1, 1000, (3, 12), device="cuda")
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, gpu.student.eval()(input_ids=ids).logits, atol=1e-5)
    assert count_parameters(loaded).total == gpu.student_params.total


def test_teacher_fine_tunes_on_the_gpu(tiny_model, tiny_features):
    model = tiny_model.cuda()
    before = [p.detach().clone() for p in model.parameters()]
    fine_tune(model, tiny_features[0], TeacherConfig(steps=3, batch_size=8), False, torch.device("cuda"),
              log=lambda s: None)
    after = list(model.parameters())
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_two_trials_share_one_gpu(tiny_dir, glue_dir, tmp_path, monkeypatch):
    """--gpus-per-trial 0.5: two trials run at once on the one GPU, each on CUDA (MLflow param 'device')."""
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, run_search

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SearchConfig(name="gpu", target=5.0, num_samples=2, max_concurrent=2, gpus_per_trial=0.5,
                       scheduler="fifo", storage=str(tmp_path / "runs"), tracking_uri=uri)
    settings = SearchSettings(DataConfig("sst2", str(glue_dir), max_train=200, max_dev=64), str(tiny_dir), cfg,
                              SearchSpace.load("ratios"), TeacherConfig(steps=5),
                              TrainConfig(rounds=2, steps_per_round=40, final_steps=10),
                              cache_dir=str(tmp_path / "cache"))
    outcome = run_search(settings, log=lambda s: None)
    assert [t.status for t in outcome.trials] == ["completed", "completed"]
    client = MlflowClient(uri)
    children = client.search_runs([client.get_experiment_by_name("ladasearch").experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    assert [c.data.params["device"] for c in children] == ["cuda", "cuda"]
    (a, b) = sorted(children, key=lambda c: c.info.start_time)
    assert b.info.start_time < a.info.end_time  # they overlapped: both held half of the GPU at once
