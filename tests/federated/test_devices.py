"""A client process's device: its local GPU (one, memory growth on) or the CPU; node_config can pin it."""

from __future__ import annotations

from typing import Any

import pytest

from fedmodel.errors import ConfigError
from fedmodel.federated import devices


class FakeConfig:
    def __init__(self, gpus: list[str]) -> None:
        self.gpus = gpus
        self.visible: list[str] | None = None
        self.growth: list[str] = []
        self.experimental = self

    def list_physical_devices(self, kind: str) -> list[str]:
        return list(self.gpus) if kind == "GPU" else ["CPU:0"]

    def set_visible_devices(self, chosen: list[str], kind: str) -> None:
        self.visible = list(chosen)

    def set_memory_growth(self, gpu: str, on: bool) -> None:
        assert on
        self.growth.append(gpu)


class FakeTF:
    def __init__(self, gpus: list[str]) -> None:
        self.config = FakeConfig(gpus)


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_configured", None)


def configure(node_config: dict[str, Any], gpus: list[str], *, new_process: bool = True) -> tuple[str, FakeConfig]:
    if new_process:
        devices._configured = None
    tf = FakeTF(gpus)
    return devices.configure_devices(node_config, tf=tf), tf.config


def test_auto_takes_the_first_gpu_with_memory_growth_and_hides_the_others() -> None:
    device, config = configure({}, ["GPU:0", "GPU:1"])
    assert device == "gpu:0" and config.visible == ["GPU:0"] and config.growth == ["GPU:0"]


def test_auto_without_a_gpu_is_the_cpu_and_cpu_hides_every_gpu() -> None:
    assert configure({"device": "auto"}, [])[0] == "cpu"
    device, config = configure({"device": "cpu"}, ["GPU:0"])
    assert device == "cpu" and config.visible == []


def test_a_pinned_gpu_is_used_alone_and_a_missing_one_is_an_error() -> None:
    device, config = configure({"device": "gpu:1"}, ["GPU:0", "GPU:1"])
    assert device == "gpu:1" and config.visible == ["GPU:1"] and config.growth == ["GPU:1"]
    with pytest.raises(ConfigError, match="this host has 1 GPU"):
        configure({"device": "gpu:3"}, ["GPU:0"])
    with pytest.raises(ConfigError, match='"auto", "cpu" or "gpu:N"'):
        configure({"device": "tpu"}, [])


def test_the_first_configuration_holds_for_the_process() -> None:
    assert configure({"device": "cpu"}, ["GPU:0"])[0] == "cpu"
    assert (
        configure({"device": "gpu:0"}, ["GPU:0"], new_process=False)[0] == "cpu"
    )  # TensorFlow cannot change devices later


def test_on_this_machine_the_real_tensorflow_trains_on_the_cpu() -> None:
    assert devices.configure_devices({}) == "cpu"
