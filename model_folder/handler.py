"""Hugging Face Inference Endpoints' custom handler for a spanbert-qa model folder.

An endpoint created from a Hub repo that holds this file loads `EndpointHandler(path)` once, with `path` the
repository's folder, and calls it with each request's JSON body:

    {"inputs": {"question": "...", "context": "..."}, "parameters": {"top_k": 3, "handle_impossible_answer": true}}
    {"inputs": [{"question": ..., "context": ...}, ...], "parameters": {...}}

and answers with a list, one entry per input: what the folder's `pipeline("question-answering")` returns for it
(a {"answer", "score", "start", "end"} dict, with "probability" for a calibrated model, or a list of them with
`top_k` > 1). The hosted widget and serverless inference run no custom code; an endpoint does, with this handler.
"""

from transformers import pipeline


class EndpointHandler:
    def __init__(self, path=""):
        self.pipeline = pipeline("question-answering", model=path or ".", trust_remote_code=True)

    def __call__(self, data):
        """Answers to `data["inputs"]` (one {"question", "context"} dict or a list of them), with the pipeline's
        parameters from `data["parameters"]`."""
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('Expected {"inputs": {"question": ..., "context": ...} or a list of them, '
                             '"parameters": {...}}')
        inputs, parameters = data["inputs"], data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f'"parameters" must be an object of pipeline parameters, got {parameters!r:.100}')
        return self.pipeline([inputs] if isinstance(inputs, dict) else inputs, **parameters)
