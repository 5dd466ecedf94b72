"""Same seed, same result on CPU: one compression run twice, and a whole search run twice."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import GLUE_DIR

from ladasearch.compress import Ratios
from ladasearch.config import DataConfig, TeacherConfig, TrainConfig
from ladasearch.data import TASKS
from ladasearch.train.features import Features
from ladasearch.train.ladabert import compress_model
from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, run_search
from ladasearch.summary import RoundRecord

GLUE = GLUE_DIR  # conftest: the shared GLUE folder


def _tiny_teacher():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification._from_config(cfg, attn_implementation="eager").eval()


def _features(n: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 17, (n,), generator=g)
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    ids = torch.randint(1, 500, (n, 16), generator=g) * mask
    return Features(ids, mask, torch.zeros_like(ids), torch.randint(0, 2, (n,), generator=g))


def _comparable(history: tuple[RoundRecord, ...]) -> list[RoundRecord]:
    return [replace(row, seconds=0.0) for row in history]


def test_compress_model_is_deterministic_for_a_seed():
    teacher = _tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train, dev = _features(48, seed=1), _features(24, seed=2)
    ratios = Ratios(embedding=0.5, svd=0.6, weight=0.5)
    cfg = TrainConfig(rounds=2, steps_per_round=4, final_steps=2, batch_size=8, learning_rate=1e-3, seed=7)
    torch.manual_seed(123)  # different global RNG states before each run: the seed in the config must rule
    first = compress_model(teacher, train, dev, TASKS["sst2"], ratios, cfg)
    torch.manual_seed(456)
    second = compress_model(teacher, train, dev, TASKS["sst2"], ratios, cfg)
    other = compress_model(teacher, train, dev, TASKS["sst2"], ratios, replace(cfg, seed=8))

    assert _comparable(first.history) == _comparable(second.history)
    assert [row.round for row in first.history] == [1, 2, 3]
    assert all(row.losses["loss"] > 0 for row in first.history)
    assert first.score == second.score
    a, b = first.student.state_dict(), second.student.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the seed matters: another seed trains differently (so the equality above is not vacuous)
    c = other.student.state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if k in c and a[k].dtype.is_floating_point)
    assert _comparable(first.history)[0].losses["loss"] != _comparable(other.history)[0].losses["loss"]
    # and the teacher was left as it was
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


TIMINGS = {"seconds", "latency_ms"}
# the default space less structured_ratio: on this embedding-heavy model removal rejects about half of the sampled
# embedding ratios untrained (eq. 7 leaves the narrowed encoder a ratio above 1), and this test needs every trial
# to complete; tests/test_structure_search.py runs the default space whole
_DEFAULT_WITHOUT_STRUCTURE = replace(SearchSpace.load("default"), structured_ratio=None)


def _search(tiny_dir, root: Path, name: str, uri: str):
    """One 3-trial TPE search (seed 3, one trial at a time, no early stopping), storage and teacher cache in root."""
    cfg = SearchConfig(name=name, target=5.0, num_samples=3, max_concurrent=1, sampler="tpe", scheduler="fifo",
                       seed=3, storage=str(root / "runs"), tracking_uri=uri)
    settings = SearchSettings(data=DataConfig("sst2", str(GLUE), max_train=200, max_dev=64, seed=3),
                              model=str(tiny_dir), search=cfg, space=_DEFAULT_WITHOUT_STRUCTURE,
                              teacher=TeacherConfig(steps=5, seed=3),
                              train=TrainConfig(rounds=2, steps_per_round=3, final_steps=2, seed=3),
                              cache_dir=str(root / "cache"))
    outcome = run_search(settings, log=lambda s: None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ladasearch")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    rows = []
    for child in sorted(children, key=lambda c: c.info.start_time):
        # every metric of the trial (per-round scores, losses, sizes), each with its steps; wall-clock timings
        # (seconds per round, latency) are measurements of the machine, not of the seed
        history = {key: [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)]
                   for key in sorted(child.data.metrics) if key not in TIMINGS}
        rows.append({"config": {k: v for k, v in child.data.params.items() if k.startswith("config.")},
                     "ratios": {k: child.data.params[k] for k in ("embedding_ratio", "svd_ratio", "weight_ratio")},
                     "outcome": child.data.tags["ladasearch.outcome"], "history": history})
    return outcome, rows


@pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")
def test_search_is_deterministic_for_a_seed(tiny_dir, tmp_path, monkeypatch):
    """Two searches with the same seed (one MLflow store, separate teacher caches, so the teacher is fine-tuned
    twice): the same sampled configs in the same order, the same solved ratios, and the same per-round scores and
    losses for every trial."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    one, rows_one = _search(tiny_dir, tmp_path / "one", "d1", uri)
    two, rows_two = _search(tiny_dir, tmp_path / "two", "d2", uri)
    assert one.parent_run_id != two.parent_run_id

    assert len(rows_one) == len(rows_two) == 3
    assert all(r["outcome"] == "completed" for r in rows_one + rows_two)
    configs = [r["config"] for r in rows_one]
    assert len({tuple(sorted(c.items())) for c in configs}) == 3  # three different points were sampled
    for a, b in zip(rows_one, rows_two):
        assert a["config"] == b["config"]
        assert a["ratios"] == b["ratios"]
        assert a["history"] == b["history"]
        assert {"val_score", "loss", "achieved_factor"} <= set(a["history"])
        assert [step for step, _ in a["history"]["val_score"]] == [1, 2, 3]
    assert [t.config for t in one.trials] == [t.config for t in two.trials]
    assert [t.score for t in one.trials] == [t.score for t in two.trials]
    assert one.best.score == two.best.score and one.best.config == two.best.config
