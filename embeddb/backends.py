"""Inference backends for local sentence-transformers models: PyTorch, ONNX Runtime, OpenVINO.

A backend is how a local model's vectors are computed, chosen per column
(``Embedding(..., backend="onnx")``) or per worker (``embeddb worker --backend onnx``):

* ``torch``: sentence-transformers on PyTorch (the default).
* ``onnx`` and ``openvino``: the same float32 network exported with ``torch.onnx.export`` from
  the model's own files and run by ONNX Runtime or OpenVINO. They are the *same model*: a
  backend whose vectors agree with PyTorch's to cosine >= :data:`PROBE_MIN_COSINE` on
  :data:`PROBE_TEXTS` keeps the column's identity, so switching re-embeds nothing. Loading one
  checks that probe and refuses a backend that disagrees (:class:`BackendMismatch`).
* ``onnx-int8``: int8 matrix products (ONNX Runtime dynamic quantisation, weights per channel;
  embeddings, LayerNorm, Softmax, attention products and each layer's feed-forward output stay
  float; see :func:`quantise`). Its vectors differ (cosine ~0.997 to PyTorch's), so it is a
  *different model*: its identity's fingerprint says ``int8``, and switching a column to it
  re-embeds through a model change (:mod:`embeddb.generations`).

Only mean-pooled models (Transformer, mean Pooling, optional Normalize: all-MiniLM-L6-v2's
pipeline) are exported; the pooling and normalisation run inside the exported graph. Exports
are cached under :func:`cache_dir`, keyed by the weights' fingerprint, the backend and
:data:`EXPORTER_VERSION`; concurrent workers write to a temporary file and rename it into place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelError, SpecError

Vectors = npt.NDArray[np.float32]

TORCH = "torch"
ONNX = "onnx"
OPENVINO = "openvino"
ONNX_INT8 = "onnx-int8"
#: Backends that compute the same vectors as PyTorch (checked by the probe when loaded).
FLOAT_BACKENDS = (TORCH, ONNX, OPENVINO)
#: Backends whose vectors differ from PyTorch's: each is another model identity.
QUANTISED_BACKENDS = (ONNX_INT8,)
BACKENDS = FLOAT_BACKENDS + QUANTISED_BACKENDS
#: Bumped whenever the export or quantisation changes what a cached file holds.
EXPORTER_VERSION = "1"
PROBE_MIN_COSINE = 0.9999
BATCH_SIZE = 32
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Texts whose vectors a float32 backend must reproduce: short and long, prose and code-like,
#: several languages, and one long enough to be truncated.
PROBE_TEXTS: tuple[str, ...] = (
    "reset my password",
    "How do I reset my password if I no longer have access to my e-mail?",
    "Locked out\n\nI can't log in since this morning; the page says my account is disabled.",
    "def embed(texts): return model.encode(texts, batch_size=32)",
    "Die Katze sitzt auf der Matte und schläft in der Sonne.",
    "El aprendizaje automático necesita datos limpios y bien etiquetados.",
    "東京は日本の首都です。",
    "a",
    "Mitochondrial DNA mutations accumulate with age and are associated with a decline in"
    " respiratory chain function in several tissues, including skeletal muscle and brain.",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 40),
)

class BackendMismatch(ModelError):
    """A backend whose vectors do not agree with PyTorch's on the probe texts."""


#: The package each backend but PyTorch runs on (``pip install 'embeddb[onnx]'`` brings them).
RUNTIMES = {ONNX: "onnxruntime", ONNX_INT8: "onnxruntime", OPENVINO: "openvino"}


def missing_runtime(backend: str) -> str | None:
    """The package ``backend`` runs on if it is not installed here, else None (looked up,
    not imported)."""
    package = RUNTIMES.get(backend)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return package


def check_backend(backend: str) -> str:
    """``backend`` if it names one (``torch``, ``onnx``, ``openvino``, ``onnx-int8``)."""
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def identity_fingerprint(weights_fingerprint: str, backend: str) -> str:
    """The fingerprint a column embedded with ``backend`` records: the weights' own for a
    float32 backend (the same model), a marked one for a quantised variant (another model)."""
    check_backend(backend)
    if backend in FLOAT_BACKENDS:
        return weights_fingerprint
    return f"{weights_fingerprint}-{backend}-v{EXPORTER_VERSION}"


def cache_dir() -> Path:
    """Where exported models are kept: ``$EMBEDDB_BACKEND_CACHE``, else
    ``$XDG_CACHE_HOME/embeddb/backends`` (``~/.cache/embeddb/backends``)."""
    configured = os.environ.get("EMBEDDB_BACKEND_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embeddb" / "backends"


def exported_path(model_path: Path, fingerprint: str, backend: str) -> Path:
    """Where the ONNX file of ``backend`` for these weights lives in the cache."""
    torch_version = _torch_version()
    key = hashlib.sha256(
        f"{fingerprint}|{backend}|{EXPORTER_VERSION}|{torch_version}".encode()
    ).hexdigest()[:16]
    file_name = "model-int8.onnx" if backend == ONNX_INT8 else "model.onnx"
    return cache_dir() / f"{model_path.name}-{key}" / file_name


def ensure_export(model_path: Path, fingerprint: str, backend: str) -> Path:
    """The ONNX file ``backend`` runs (``openvino`` runs the float32 one), exported or
    quantised on first use and cached."""
    float_file = exported_path(model_path, fingerprint, ONNX)
    if not float_file.exists():
        _check_mean_pooled(model_path)
        _write_atomically(float_file, lambda target: _export(model_path, target))
    if backend != ONNX_INT8:
        return float_file
    int8_file = exported_path(model_path, fingerprint, ONNX_INT8)
    if not int8_file.exists():
        _write_atomically(int8_file, lambda target: quantise(float_file, target))
    return int8_file


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` through a temporary file in its folder and rename it into place, so
    another process sees the whole file or none (the last of concurrent writers wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _check_mean_pooled(model_path: Path) -> None:
    modules_file = model_path / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.exists() else []
    kinds = [module.get("type", "").rsplit(".", 1)[-1] for module in modules]
    pooling = model_path / "1_Pooling" / "config.json"
    mean = pooling.exists() and json.loads(pooling.read_text()).get("pooling_mode_mean_tokens")
    if kinds[:2] != ["Transformer", "Pooling"] or not mean or set(kinds[2:]) - {"Normalize"}:
        raise SpecError(
            f"the ONNX/OpenVINO backends export mean-pooled models (Transformer, mean Pooling,"
            f" Normalize) and the model in {model_path} is {' + '.join(kinds) or 'not one'};"
            " use backend='torch'"
        )


def _normalises(model_path: Path) -> bool:
    modules = json.loads((model_path / "modules.json").read_text())
    return any(module.get("type", "").endswith("Normalize") for module in modules)


def _export(model_path: Path, target: Path) -> None:
    """Export the transformer with mean pooling (and normalisation) in the graph."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    normalise = _normalises(model_path)
    transformer = AutoModel.from_pretrained(str(model_path)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1) if normalise else mean

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    example = tokenizer(["an example", "a second, longer example"], padding=True,
                        return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            Pooled(), tuple(example[name] for name in _INPUTS), str(target),
            input_names=list(_INPUTS), output_names=["embedding"],
            dynamic_axes={**dynamic, "embedding": {0: "batch"}}, opset_version=17,
            dynamo=False,
        )


def quantise(float_file: Path, target: Path, *, keep_float: Sequence[str] = ("output/dense",),
             per_channel: bool = True) -> None:
    """Quantise ``float_file`` to int8 with ONNX Runtime: the weights of every MatMul with a
    weight matrix, per output channel, and its activations per batch at run time (dynamic, so
    no calibration set: the same file on every machine). MatMuls whose node name contains one
    of ``keep_float`` stay float: by default each layer's feed-forward output projection,
    whose input (after GELU) has the outliers that cost most accuracy. The embeddings,
    LayerNorm, Softmax and the attention products stay float in any case."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".pre.onnx")
    try:
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        weights = {initializer.name for initializer in graph.initializer}
        kept = [node.name for node in graph.node if node.op_type == "MatMul"
                and node.input[1] in weights and "attention/output" not in node.name
                and any(part in node.name for part in keep_float)]
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8,
                         per_channel=per_channel, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=kept)
    finally:
        if prepared.exists():
            prepared.unlink()


def _tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def _max_tokens(model_path: Path) -> int:
    config = model_path / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("max_seq_length", 512))
    return 512


def _encode_inputs(tokenizer: Any, texts: list[str], max_tokens: int) -> dict[str, Any]:
    # as sentence-transformers' Transformer module: stripped, padded to the longest, truncated
    encoded = tokenizer([text.strip() for text in texts], padding=True, truncation="longest_first",
                        max_length=max_tokens, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in _INPUTS}


def _torch_version() -> str:
    try:
        import torch
    except ImportError:
        return "none"
    return str(torch.__version__)


class ExportedModel:
    """A mean-pooled model exported to ONNX, run by ONNX Runtime or OpenVINO on the CPU.

    ``encode`` sorts texts by length and runs batches of :data:`BATCH_SIZE`, as
    sentence-transformers does, so the padding (and the speed) match.

    Example::

        model = ExportedModel(path, fingerprint, "onnx", threads=2)
        model.encode(["reset my password"]).shape   # (1, 384)
    """

    def __init__(self, model_path: Path, fingerprint: str, backend: str,
                 threads: int | None = None, file: Path | None = None) -> None:
        check_backend(backend)
        if backend == TORCH:
            raise SpecError("ExportedModel runs the onnx, openvino and onnx-int8 backends")
        self.backend = backend
        # ``file``: another ONNX file of this model to run (a benchmark's variant)
        self.file = file or ensure_export(model_path, fingerprint, backend)
        self.max_tokens = _max_tokens(model_path)
        self.tokenizer = _tokenizer(model_path)
        self._run = _openvino(self.file, threads) if backend == OPENVINO else _onnxruntime(
            self.file, threads)

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One vector per text, in order."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        out: list[Vectors] = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = [texts[i] for i in order[start:start + BATCH_SIZE]]
            out.append(self._run(_encode_inputs(self.tokenizer, batch, self.max_tokens)))
        vectors = np.concatenate(out)
        result: Vectors = np.empty_like(vectors)
        result[order] = vectors
        return result


def _onnxruntime(file: Path, threads: int | None) -> Callable[[dict[str, Any]], Vectors]:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("onnxruntime is not installed: pip install 'embeddb[onnx]'") from exc
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(file), options,
                                           providers=["CPUExecutionProvider"])

    def run(inputs: dict[str, Any]) -> Vectors:
        return np.asarray(session.run(None, inputs)[0], dtype=np.float32)

    return run


def _openvino(file: Path, threads: int | None) -> Callable[[dict[str, Any]], Vectors]:
    try:
        import openvino
    except ImportError as exc:
        raise ModelError("openvino is not installed: pip install 'embeddb[onnx]'") from exc
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(str(file), "CPU", config)
    request = compiled.create_infer_request()

    def run(inputs: dict[str, Any]) -> Vectors:
        result = request.infer(inputs)
        return np.asarray(result[compiled.output(0)], dtype=np.float32)

    return run


def probe_agreement(reference: Callable[[Sequence[str]], Vectors],
                    candidate: Callable[[Sequence[str]], Vectors]) -> float:
    """The smallest cosine between the two encoders' vectors of :data:`PROBE_TEXTS`."""
    texts = list(PROBE_TEXTS)
    return float(row_cosines(reference(texts), candidate(texts)).min())


def row_cosines(a: Vectors, b: Vectors) -> Vectors:
    """Row-wise cosine similarity of two sets of vectors."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines: Vectors = (np.sum(a * b, axis=1) / np.where(norms == 0, 1.0, norms)).astype(
        np.float32)
    return cosines
