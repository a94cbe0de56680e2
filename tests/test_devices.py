"""Where the model runs: Ray's GPU assignment decides, not what torch can see."""

import pytest
import ray
import torch

from pipelines import devices
from pipelines.devices import placement


def test_outside_ray_and_without_an_assigned_gpu_the_model_runs_on_the_cpu(monkeypatch):
    assert placement() == devices.Placement("cpu", torch.float32)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node: torch sees every GPU
    assert placement() == devices.Placement("cpu", torch.float32)


def test_an_assigned_gpu_is_used_in_float16_by_its_index_among_the_visible_ones(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what Ray sets for the worker
    assert placement() == devices.Placement("cuda:0", torch.float16)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES
    assert placement().device == "cuda:3"


def test_an_assigned_gpu_without_cuda_in_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"assigned GPU \[0\].*CUDA build"):
        placement()


def test_an_explicit_device_is_taken_as_it_is():
    assert placement("cpu") == devices.Placement("cpu", torch.float32)
    assert placement("cuda:1") == devices.Placement("cuda:1", torch.float16)


def test_in_a_real_ray_worker_the_assignment_decides():
    """On a local Ray that declares one GPU: a task that asked for none runs on the CPU; one that
    asked for the GPU is refused clearly here, where torch has no CUDA (or placed on it, where it has)."""

    @ray.remote(num_gpus=0)
    def without():
        return placement().device

    @ray.remote(num_gpus=1)
    def with_gpu():
        try:
            return placement().device
        except RuntimeError as error:
            return str(error)

    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.get(without.remote()) == "cpu"
        answer = ray.get(with_gpu.remote())
        assert answer == "cuda:0" if torch.cuda.is_available() else "assigned GPU [0]" in answer, answer
    finally:
        ray.shutdown()
