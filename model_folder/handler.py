"""Hugging Face Inference Endpoints' custom handler for a spanbert-qa model folder.

An endpoint created from a Hub repo that holds this file loads `EndpointHandler(path)` once, with `path` the
repository's folder, and calls it with each request's JSON body:

    {"inputs": {"question": "...", "context": "..."}, "parameters": {"top_k": 3, "handle_impossible_answer": true}}
    {"inputs": [{"question": ..., "context": ...}, ...], "parameters": {...}}
    {"inputs": {"question": "...", "passages": ["...", {"text": "...", "id": "doc-7", "title": "..."}]}}

and answers with a list, one entry per input: what the folder's `pipeline("question-answering")` returns for it
(a {"answer", "score", "start", "end"} dict, with "probability" for a calibrated model, or a list of them with
`top_k` > 1; over passages, each answer also names its "passage", "passage_id", "title" and "meta"). The hosted widget and serverless inference run no custom code; an endpoint does, with this handler.
The endpoint's environment variables: SPANBERT_QA_BF16=1 answers every request under bf16 autocast;
SPANBERT_QA_TORCH_COMPILE=1 compiles the encoder (the first requests of each shape pay the compilation).
"""

import os

from transformers import pipeline

# The endpoint's switch for bf16: set to 1 (an endpoint's environment variable), every request runs the encoder under
# bf16 autocast, as `"parameters": {"bf16": true}` asks for one request. Worth it on CPUs with bf16 instructions
# (avx512_bf16, amx_bf16) and on GPUs; elsewhere torch emulates them, slower than float32.
BF16_VARIABLE = "SPANBERT_QA_BF16"
# The switch for `torch_compile=True`: the encoder compiled, its first requests waiting for the compilation; in
# float32 1.22x the questions/s of an uncompiled one on a 2-core EPYC (bench/README.md), nothing measurable in bf16.
COMPILE_VARIABLE = "SPANBERT_QA_TORCH_COMPILE"


def switched_on(variable):
    return os.environ.get(variable, "0").strip().lower() in ("1", "true", "yes")


class EndpointHandler:
    def __init__(self, path=""):
        switches = {"bf16": switched_on(BF16_VARIABLE), "torch_compile": switched_on(COMPILE_VARIABLE)}
        self.pipeline = pipeline("question-answering", model=path or ".", trust_remote_code=True,
                                 **{name: True for name, on in switches.items() if on})

    def __call__(self, data):
        """Answers to `data["inputs"]` (one {"question", "context"} or {"question", "passages"} dict, or a list of
        them), with the pipeline's parameters from `data["parameters"]`."""
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('Expected {"inputs": {"question": ..., "context": ...} or a list of them, '
                             '"parameters": {...}}')
        inputs, parameters = data["inputs"], data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be an object of pipeline parameters, got {parameters!r:.100}')
        return self.pipeline([inputs] if isinstance(inputs, dict) else inputs, **parameters)
