"""Inventory: NVML path through a stand-in module, and the CPU fallback when NVML is missing."""

import sys
import types

from gpumesh.node.worker import inventory as inv


def fake_pynvml(fail_init: bool = False):
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    m.NVMLError = NVMLError

    def init():
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 9) if h == 0 else (9, 0)
    m.nvmlDeviceGetName = lambda h: ["NVIDIA GeForce RTX 4090", "NVIDIA H100"][h]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=[24564, 81559][h] << 20)
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    return m


def test_gpus_from_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    got = inv.inventory()
    assert [g.name for g in got.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA H100"]
    assert [g.compute_capability for g in got.gpus] == ["8.9", "9.0"]
    assert got.max_gpu_memory_mib == 81559
    assert got.nvml_error is None
    assert got.to_dict()["gpus"][0]["driver"] == "550.54.15"


def test_cpu_fallback_without_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    got = inv.inventory()
    assert got.gpus == () and got.max_gpu_memory_mib == 0
    assert "NVML" in got.nvml_error
    assert got.cpu.logical_cores >= 1 and got.cpu.memory_mib > 0


def test_real_machine_never_raises():
    got = inv.inventory()
    assert got.cpu.logical_cores >= 1
    assert got.gpus or got.nvml_error
