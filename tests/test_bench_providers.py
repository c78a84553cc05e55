"""Provider truth: onnxruntime-gpu lists CUDA/TensorRT without a GPU; gptctl reports what is really active."""

import pytest

from gptctl.runtime.providers import PROVIDER_NAMES, create_session, probe_providers


def _has_gpu():
    try:
        return probe_providers(["cuda"])["cuda"]["available"]
    except Exception:
        return False


def test_cpu_is_always_active():
    info = probe_providers(["cpu"])["cpu"]
    assert info["available"] is True and info["active_providers"] == ["CPUExecutionProvider"]


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present here; the fallback path is not taken")
@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_gpu_provider_without_gpu_is_unavailable_with_reason(name):
    info = probe_providers([name])[name]
    assert info["available"] is False
    assert PROVIDER_NAMES[name] in info["reason"]
    assert "CPUExecutionProvider" in str(info["active_providers"]) or "not in this onnxruntime build" in info["reason"]


def test_fallback_is_detected_from_session_providers(monkeypatch):
    """A session that silently runs on CPU is not reported under the requested provider's name."""
    import onnxruntime as ort

    from gptctl.runtime import providers

    class FakeSession:
        def __init__(self, *a, **k):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    session, info = create_session(providers._probe_model(), "cuda")
    assert session is None and info["available"] is False
    assert "fell back" in info["reason"]


def test_missing_provider_in_build(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    session, info = create_session(b"", "tensorrt")
    assert session is None and "not in this onnxruntime build" in info["reason"]


def test_provider_errors_do_not_reach_stdout(capfd):
    probe_providers(["cuda", "tensorrt"])
    captured = capfd.readouterr()
    assert "EP Error" not in captured.out
