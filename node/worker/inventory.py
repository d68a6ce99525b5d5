"""Hardware inventory for the worker's capability document: GPUs through NVML (nvidia-ml-py),
and a CPU inventory when there is no GPU or no driver. Never raises for missing hardware."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mib: int
    driver: str
    compute_capability: str
    uuid: str


@dataclass(frozen=True)
class CpuInfo:
    model: str
    logical_cores: int
    memory_mib: int
    machine: str


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GpuInfo, ...]
    cpu: CpuInfo
    nvml_error: str | None = None  # why no GPU is listed, when none is
    extra: dict = field(default_factory=dict)

    @property
    def max_gpu_memory_mib(self) -> int:
        return max((g.memory_mib for g in self.gpus), default=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gpus"] = [asdict(g) for g in self.gpus]
        return d


def _decode(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def gpu_inventory() -> tuple[tuple[GpuInfo, ...], str | None]:
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency, but be robust
        return (), f"nvidia-ml-py unavailable ({exc})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return (), f"NVML: {exc}"
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(GpuInfo(
                index=i,
                name=_decode(pynvml.nvmlDeviceGetName(h)),
                memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1 << 20),
                driver=driver,
                compute_capability=f"{major}.{minor}",
                uuid=_decode(pynvml.nvmlDeviceGetUUID(h)),
            ))
        return tuple(gpus), None
    except pynvml.NVMLError as exc:
        return (), f"NVML: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def cpu_inventory() -> CpuInfo:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):
        mem = 0
    return CpuInfo(model=model or "unknown", logical_cores=os.cpu_count() or 1, memory_mib=int(mem),
                   machine=platform.machine())


def inventory() -> Inventory:
    gpus, err = gpu_inventory()
    return Inventory(gpus=gpus, cpu=cpu_inventory(), nvml_error=err)
