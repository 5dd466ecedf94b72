"""The teacher's weights and the calibration statistics pickle as numpy arrays, so that the trials of a search map
the object store's one copy instead of unpickling a copy each (``ladasearch.nn.shared``)."""

from __future__ import annotations

import pickle

import pytest
import torch

from ladasearch.compress.calibration import CalibrationStats, LayerStats
from ladasearch.nn.shared import SharedState, from_arrays, to_arrays


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_a_state_survives_pickling_with_its_values_and_dtypes(dtype):
    state = SharedState({"w": (torch.arange(12).reshape(3, 4) % 5).to(dtype), "b": torch.ones(3, dtype=dtype)})
    back = pickle.loads(pickle.dumps(state))
    assert type(back) is SharedState and list(back) == ["w", "b"]
    for name, tensor in state.items():
        assert back[name].dtype == dtype and torch.equal(back[name], tensor)


def test_arrays_are_views_not_copies():
    tensor = torch.zeros(4)
    arrays = to_arrays({"t": tensor})
    tensor[1] = 7.0
    assert arrays["t"][0][1] == 7.0 and from_arrays(arrays)["t"][1] == 7.0


def _stats() -> CalibrationStats:
    layers = {"a": LayerStats("a", 10, input_gram=torch.randn(64, 64), input_sq=torch.rand(64)),
              "e": LayerStats("e", 5, token_counts=torch.arange(300, dtype=torch.float32))}
    return CalibrationStats(layers, frozenset({"input_gram", "token_counts"}), 2, 8, 0.5)


def test_statistics_survive_pickling():
    stats = _stats()
    back = pickle.loads(pickle.dumps(stats))
    assert back.needs == stats.needs and (back.batches, back.examples) == (2, 8)
    for name, layer in stats.layers.items():
        assert back.layers[name].rows == layer.rows
        assert back.layers[name].tensors().keys() == layer.tensors().keys()
        for stat, tensor in layer.tensors().items():
            assert torch.equal(back.layers[name].get(stat, "test"), tensor)


def test_ray_hands_every_reader_the_one_stored_copy():
    """Two ``ray.get`` of one object are two deserializations (two trials): their tensors share one buffer, where
    torch tensors pickled as such would come back as two copies."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ref = ray.put({"stats": _stats(), "state": SharedState({"w": torch.randn(256, 256)}),
                       "plain": {"w": torch.randn(256, 256)}})
        first, second = ray.get(ref), ray.get(ref)
        gram = [got["stats"].layers["a"].input_gram for got in (first, second)]
        weight = [got["state"]["w"] for got in (first, second)]
        plain = [got["plain"]["w"] for got in (first, second)]
        assert gram[0].data_ptr() == gram[1].data_ptr() and weight[0].data_ptr() == weight[1].data_ptr()
        assert plain[0].data_ptr() != plain[1].data_ptr()   # the contrast: a torch tensor is copied per reader
        assert torch.equal(gram[0], gram[1]) and torch.equal(weight[0], weight[1])
    finally:
        ray.shutdown()
