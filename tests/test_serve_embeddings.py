"""POST /v1/embeddings on a `--task feature-extraction` export of a tiny BERT: pooled as the model's
sentence-transformers config says (from the export, else from the source model dir), equal to PyTorch within
the export's atol, unaffected by padding; the openai client's base64 default; refusals."""

import json
import shutil

import httpx
import numpy as np
import pytest
from serve_support import LiveServer

from tiny_models import build_tiny_encoder

MODEL = "tiny-bert"
TEXTS = ["The doctor", "A nurse measured the blood pressure twice before the visit", "Fever"]


def _sentence_transformers_config(directory, mode, normalize):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
    config = {"word_embedding_dimension": 32, **{k: m == mode for m, k in keys.items()}}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """(source model dir, export dir): the export carries MiniLM's config (mean pooling, then Normalize)."""
    from gptctl.export import export_model

    root = tmp_path_factory.mktemp("serve-bert")
    model = build_tiny_encoder("bert", root / "model", seed=0)
    out = root / "export"
    export_model({"model": str(model), "output": str(out), "task": "feature-extraction"})
    _sentence_transformers_config(out, "mean", normalize=True)
    return model, out


def _state(artifact):
    from gptctl.serve.app import ServeState
    from gptctl.serve.metrics import EngineObserver, ServeMetrics
    from gptctl.serve.versions import Deployment, LoadOptions, load_version

    metrics = ServeMetrics()
    opts = LoadOptions()
    observer = EngineObserver(metrics)
    return ServeState(
        model_name=MODEL, metrics=metrics, deployment=Deployment(load_version(artifact, opts, observer), opts, observer)
    )


@pytest.fixture(scope="module")
def server(encoder):
    state = _state(encoder[1])
    with LiveServer(state) as live:
        yield live
    state.deployment.close()


def torch_embeddings(model_dir, tokenizer, texts, mode="mean", normalize=True):
    """sentence-transformers' computation in PyTorch: pooled last_hidden_state over the mask."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for text in texts:  # one at a time: no padding at all on the reference side
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        v = {"mean": hidden.mean(0), "cls": hidden[0], "max": hidden.max(0).values}[mode]
        out.append(torch.nn.functional.normalize(v, dim=0) if normalize else v)
    return torch.stack(out).numpy()


def test_embeddings_equal_pytorch_pooling_within_the_exports_atol(server, encoder):
    version = server.state.deployment.current
    assert version.engine.pooling.mode == "mean" and version.engine.pooling.normalize
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = torch_embeddings(encoder[0], version.tokenizer, TEXTS)
    atol = json.loads((encoder[1] / "gptctl.json").read_text())["validation"]["atol"]
    assert got.shape == (3, 32) and np.abs(got - want).max() <= atol
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and body["system_fingerprint"] == version.fingerprint
    assert body["usage"]["prompt_tokens"] == sum(len(version.tokenizer(t)["input_ids"]) for t in TEXTS)
    alone = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": TEXTS[2]}).json()
    assert np.abs(np.array(alone["data"][0]["embedding"]) - got[2]).max() < 1e-5  # padding is masked out


def test_the_openai_client_gets_the_same_vectors_as_base64(server):
    from openai import OpenAI

    c = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    via_client = c.embeddings.create(model=MODEL, input=TEXTS[:2])  # asks for base64, decodes it
    floats = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": TEXTS[:2]}).json()
    for a, b in zip(via_client.data, floats["data"], strict=True):
        assert np.array_equal(np.array(a.embedding, dtype=np.float32), np.array(b["embedding"], dtype=np.float32))


def test_embedding_requests_are_validated(server):
    def post(body):
        return httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, **body})

    assert post({"input": []}).status_code == 400
    assert post({"input": [""]}).json()["error"]["param"] == "input"
    assert post({"input": [[5, 99999]]}).status_code == 400
    assert post({"input": "x", "dimensions": 8}).json()["error"]["code"] == "unsupported_parameter"
    assert post({"input": "x" * 2000}).json()["error"]["code"] == "context_length_exceeded"
    assert post({"input": [[5, 17, 42]]}).status_code == 200
    completion = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 2})
    assert completion.status_code == 400 and completion.json()["error"]["code"] == "not_a_generation_model"
    ready = httpx.get(server.url + "/health/ready").json()
    assert ready["status"] == "ready" and ready["version"] == server.state.deployment.current.fingerprint


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_pooling_is_read_from_the_source_model_dir_when_the_export_lacks_it(encoder, tmp_path, mode):
    from gptctl.manifest import read_manifest
    from gptctl.serve.embeddings import read_pooling
    from gptctl.serve.versions import LoadOptions, load_version

    source, export = encoder
    model = tmp_path / "model"
    shutil.copytree(source, model)
    _sentence_transformers_config(model, mode, normalize=False)
    artifact = tmp_path / "export"
    shutil.copytree(export, artifact, ignore=shutil.ignore_patterns("modules.json", "1_Pooling"))
    manifest = read_manifest(artifact)
    manifest["inputs"]["model"]["path"] = str(model)
    (artifact / "gptctl.json").write_text(json.dumps(manifest))
    assert read_pooling(artifact, {"inputs": {}}).mode == "mean"  # no config anywhere: mean
    version = load_version(artifact, LoadOptions())
    try:
        assert version.engine.pooling.mode == mode and not version.engine.pooling.normalize
        ids = [version.tokenizer(t)["input_ids"] for t in TEXTS]
        got = version.engine.embed(ids)
    finally:
        version.engine.stop()
    want = torch_embeddings(source, version.tokenizer, TEXTS, mode=mode, normalize=False)
    assert np.abs(got - want).max() <= manifest["validation"]["atol"]


def test_a_pooling_config_with_several_modes_is_refused(tmp_path):
    from gptctl.errors import BadInput
    from gptctl.serve.embeddings import read_pooling

    _sentence_transformers_config(tmp_path, "mean", normalize=False)
    config = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({**config, "pooling_mode_cls_token": True}))
    with pytest.raises(BadInput, match="pooling modes"):
        read_pooling(tmp_path)
