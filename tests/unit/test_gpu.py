"""gateway.gpu against a fake NVML module; error classes and constants are pynvml's own."""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from types import SimpleNamespace

import pynvml

from gateway.gpu import GIB, GpuStatus, NvmlReader, device_pool, devices_by_pool

NOT_AVAILABLE = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value


def err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml maps the code to its subclass, as the real bindings raise


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def fake_gpu(**overrides):
    """One GPU's answers; a value that is an exception is raised by the matching call."""
    gpu = dict(
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-0000",
        memory=SimpleNamespace(total=80 * GIB, used=12 * GIB, free=68 * GIB),
        utilization=SimpleNamespace(gpu=35, memory=20),
        temperature=41,
        power=250_500,  # milliwatts
        power_limit=700_000,
        compute=[],
        graphics=[],
    )
    gpu.update(overrides)
    return gpu


class FakeNvml:
    """The slice of pynvml's API that gateway.gpu uses."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, gpus, *, init_error=None, driver="550.54.15", cuda=12040):
        self.gpus, self.init_error, self.driver, self.cuda = gpus, init_error, driver, cuda
        self.init_calls = 0
        self.temperature_sensors = []

    def _answer(self, handle, key):
        value = self.gpus[handle][key]
        if isinstance(value, BaseException):
            raise value
        return value

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if isinstance(self.gpus[index], BaseException):
            raise self.gpus[index]
        return index

    def nvmlDeviceGetName(self, h):
        return self._answer(h, "name")

    def nvmlDeviceGetUUID(self, h):
        return self._answer(h, "uuid")

    def nvmlDeviceGetMemoryInfo(self, h):
        return self._answer(h, "memory")

    def nvmlDeviceGetUtilizationRates(self, h):
        return self._answer(h, "utilization")

    def nvmlDeviceGetTemperature(self, h, sensor):
        self.temperature_sensors.append(sensor)
        return self._answer(h, "temperature")

    def nvmlDeviceGetPowerUsage(self, h):
        return self._answer(h, "power")

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._answer(h, "power_limit")

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return self._answer(h, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return self._answer(h, "graphics")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_error_codes_map_to_real_subclasses():
    assert type(err(pynvml.NVML_ERROR_UNKNOWN)) is pynvml.NVMLError_Unknown
    assert isinstance(err(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)


def test_native_linux_two_gpus_with_models():
    nvml = FakeNvml(
        [
            fake_gpu(
                compute=[proc(100, 10 * GIB), proc(101, 1 * GIB)],
                # Xorg (pid 7, no model) and pid 100 again: the union holds each PID once.
                graphics=[proc(7, 64 * 1024**2), proc(100, 10 * GIB)],
            ),
            fake_gpu(name="NVIDIA RTX 4090", uuid="GPU-0001", power=None, compute=[proc(200, 2 * GIB)]),
        ]
    )
    status = NvmlReader(nvml).read({"qwen": {100, 200}, "llama": [101], "idle": []})

    assert status.available and status.reason is None
    assert status.driver_version == "550.54.15" and status.cuda_driver_version == "12.4"
    gpu0, gpu1 = status.gpus
    assert (gpu0.index, gpu0.name, gpu0.uuid) == (0, "NVIDIA H100 80GB HBM3", "GPU-0000")
    assert gpu0.memory.model_dump() == {"total_bytes": 80 * GIB, "used_bytes": 12 * GIB, "free_bytes": 68 * GIB}
    assert gpu0.utilization.model_dump() == {"gpu_percent": 35, "memory_percent": 20}
    assert (gpu0.temperature_c, gpu0.power_w, gpu0.power_limit_w) == (41, 250.5, 700.0)
    assert nvml.temperature_sensors[0] == pynvml.NVML_TEMPERATURE_GPU
    assert [(p.pid, p.model) for p in gpu0.processes] == [(7, None), (100, "qwen"), (101, "llama")]
    assert gpu0.models == {"qwen": 10 * GIB, "llama": 1 * GIB}
    assert gpu1.models == {"qwen": 2 * GIB}
    # The JSON the endpoint serves: every key present, unknowns as null.
    body = status.model_dump(mode="json")
    assert set(body) == {"available", "reason", "driver_version", "cuda_driver_version", "gpus"}
    assert body["gpus"][1]["power_w"] is None
    assert body["gpus"][1]["processes"] == [{"pid": 200, "used_bytes": 2 * GIB, "model": "qwen"}]
    assert GpuStatus.model_validate(body) == status


def test_wsl2_keeps_memory_when_utilization_and_processes_fail():
    unknown = err(pynvml.NVML_ERROR_UNKNOWN)
    nvml = FakeNvml(
        [
            fake_gpu(
                name="NVIDIA GeForce RTX 4090",
                utilization=err(pynvml.NVML_ERROR_NOT_SUPPORTED),
                compute=unknown,
                graphics=unknown,
            ),
            fake_gpu(utilization=unknown, compute=[proc(5, GIB)], graphics=unknown),
        ]
    )
    status = NvmlReader(nvml).read({"qwen": [5]})

    assert status.available
    for gpu in status.gpus:
        assert gpu.memory.used_bytes == 12 * GIB
        assert gpu.utilization.gpu_percent is None and gpu.utilization.memory_percent is None
        # One of two process queries failing is not a partial list: totals would under-count.
        assert gpu.processes is None and gpu.models is None
        assert gpu.temperature_c == 41 and gpu.power_w == 250.5
    assert status.gpus[0].name == "NVIDIA GeForce RTX 4090" and status.gpus[0].memory.total_bytes == 80 * GIB


def test_failing_power_call_blanks_only_power():
    nvml = FakeNvml(
        [fake_gpu(power=err(pynvml.NVML_ERROR_NOT_SUPPORTED)), fake_gpu(uuid="GPU-0001")]
    )
    gpu0, gpu1 = NvmlReader(nvml).read().gpus
    assert gpu0.power_w is None and gpu0.power_limit_w == 700.0
    assert gpu0.memory.total_bytes == 80 * GIB and gpu0.utilization.gpu_percent == 35
    assert gpu1.power_w == 250.5


def test_version_mismatch_error_is_not_fatal():
    # pynvml raises this plain Exception (not NVMLError) when the driver lacks a function.
    nvml = FakeNvml([fake_gpu(temperature=pynvml.NVMLLibraryMismatchError("old driver"))])
    gpu = NvmlReader(nvml).read().gpus[0]
    assert gpu.temperature_c is None and gpu.name == "NVIDIA H100 80GB HBM3"


def test_lost_gpu_is_listed_empty_and_others_survive():
    nvml = FakeNvml([err(pynvml.NVML_ERROR_GPU_IS_LOST), fake_gpu()])
    status = NvmlReader(nvml).read()
    assert status.available
    assert status.gpus[0].model_dump(exclude={"index", "node", "memory", "utilization"}) == dict.fromkeys(
        ["name", "uuid", "temperature_c", "power_w", "power_limit_w", "processes", "models"]
    )
    assert status.gpus[1].name == "NVIDIA H100 80GB HBM3"


def test_library_not_found_then_retry_after_back_off():
    clock = Clock()
    nvml = FakeNvml([fake_gpu()], init_error=err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    reader = NvmlReader(nvml, clock=clock)

    status = reader.read()
    assert not status.available and status.gpus == []
    assert status.reason.startswith("NVML library not found: no NVIDIA driver visible")

    nvml.init_error = None  # e.g. the driver comes back
    clock.now += 29
    assert reader.read().reason == status.reason  # still backing off: no new attempt
    assert nvml.init_calls == 1

    clock.now += 1
    assert reader.read().available
    assert reader.read().available
    assert nvml.init_calls == 2  # once up, init is kept


def test_other_init_errors_have_reasons():
    cases = {
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "NVIDIA driver not loaded",
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "versions differ",
        pynvml.NVML_ERROR_UNKNOWN: "NVML failed to start: Unknown Error",
    }
    for code, expected in cases.items():
        status = NvmlReader(FakeNvml([], init_error=err(code))).read()
        assert not status.available and expected in status.reason


def test_missing_pynvml_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    status = NvmlReader().read()
    assert not status.available and "nvidia-ml-py" in status.reason


def test_no_gpus_and_failed_count():
    status = NvmlReader(FakeNvml([])).read()
    assert not status.available and status.reason == "the NVIDIA driver reports no GPUs"
    assert status.driver_version == "550.54.15"

    nvml = FakeNvml([fake_gpu()])

    def failing_count():
        raise err(pynvml.NVML_ERROR_UNKNOWN)

    nvml.nvmlDeviceGetCount = failing_count
    assert NvmlReader(nvml).read().reason == "NVML could not count the GPUs"


def test_bytes_from_old_pynvml():
    nvml = FakeNvml([fake_gpu(name=b"Tesla T4", uuid=b"GPU-abcd")], driver=b"470.82.01")
    status = NvmlReader(nvml).read()
    assert status.driver_version == "470.82.01"
    assert (status.gpus[0].name, status.gpus[0].uuid) == ("Tesla T4", "GPU-abcd")


def test_value_not_available():
    nvml = FakeNvml(
        [
            fake_gpu(
                memory=SimpleNamespace(total=24 * GIB, used=NOT_AVAILABLE, free=NOT_AVAILABLE),
                compute=[proc(1, NOT_AVAILABLE), proc(2, None), proc(3, GIB)],
            )
        ]
    )
    gpu = NvmlReader(nvml).read({"a": [1, 3], "b": [2]}).gpus[0]
    assert gpu.memory.model_dump() == {"total_bytes": 24 * GIB, "used_bytes": None, "free_bytes": None}
    assert [p.used_bytes for p in gpu.processes] == [None, None, GIB]
    assert gpu.models == {"a": GIB, "b": 0}
    assert gpu.utilization.gpu_percent == 35 and gpu.temperature_c == 41  # the rest is still read


def test_several_gpus_are_read_each_in_index_order():
    nvml = FakeNvml([fake_gpu(name="NVIDIA H100"), fake_gpu(name="NVIDIA H100")])
    nvml.gpus[0]["memory"] = SimpleNamespace(total=80 * GIB, used=int(12.3 * GIB), free=0)
    gpus = NvmlReader(nvml).read().gpus
    assert [(g.index, g.name, g.memory.used_bytes) for g in gpus] == [
        (0, "NVIDIA H100", int(12.3 * GIB)), (1, "NVIDIA H100", 12 * GIB)]


def test_concurrent_reads_init_once():
    nvml = FakeNvml([fake_gpu()])
    slow_init = nvml.nvmlInit

    def nvmlInit():
        time.sleep(0.05)  # widen the race window
        slow_init()

    nvml.nvmlInit = nvmlInit
    reader = NvmlReader(nvml)
    results = []
    threads = [threading.Thread(target=lambda: results.append(reader.read())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert nvml.init_calls == 1 and all(r.available for r in results)


def _nvml_library_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def test_real_pynvml():
    """No fake: on a GPU-less machine the real bindings must give a reason, not raise."""
    status = NvmlReader().read()
    if _nvml_library_present():  # a GPU box: the real answer must be well-formed
        assert status.available and status.gpus, status.reason
        assert status.gpus[0].index == 0 and status.gpus[0].memory.total_bytes
    else:
        assert not status.available
        assert status.reason.startswith("NVML library not found")


def test_a_reading_is_of_the_local_node_its_devices_keyed_as_its_pools():
    status = NvmlReader(FakeNvml([fake_gpu(uuid="GPU-a"), fake_gpu(uuid="GPU-b")])).read()
    assert [device_pool(d) for d in status.gpus] == ["gpu0", "gpu1"]
    assert {p: d.uuid for p, d in devices_by_pool(status).items()} == {"gpu0": "GPU-a", "gpu1": "GPU-b"}
    assert devices_by_pool(None) == {}
