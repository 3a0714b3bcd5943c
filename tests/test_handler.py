"""The Inference Endpoints handler every model folder carries, loaded as an endpoint loads it: from the folder, in a
fresh process that cannot import the project."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from transformers import pipeline

from tests.conftest import HEADS

ENDPOINT = textwrap.dedent("""
    import importlib.util, json, sys
    assert importlib.util.find_spec("qa_pipeline") is None, "the project is importable"
    folder, requests = sys.argv[1], json.loads(sys.argv[2])
    spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(folder)
    print(json.dumps([handler(request) for request in requests]))
""")


def served(folder, requests, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", ENDPOINT, str(folder), json.dumps(requests)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("head", HEADS)
def test_an_endpoint_answers_as_the_pipeline_does(learned, learned_questions, tmp_path, head):
    assert (learned[head] / "handler.py").exists()
    items = [{"question": q["question"], "context": q["context"]} for q in learned_questions.select(range(6))]
    parameters = {"top_k": 3, "handle_impossible_answer": True, "align_to_words": False}
    answers = served(learned[head], [{"inputs": items[0]}, {"inputs": items, "parameters": parameters}], tmp_path)
    qa = pipeline("question-answering", model=str(learned[head]), trust_remote_code=True)
    expected = [[qa(items[0])], qa(items, **parameters)]
    assert expected[0][0]["answer"] and len(answers[1]) == 6 and all(len(answer) == 3 for answer in answers[1])
    for got, want in zip(answers, expected):  # float noise between processes moves the scores, not the answers
        got, want = ([[a] if isinstance(a, dict) else a for a in answer] for answer in (got, want))
        assert [[(a["answer"], a["start"], a["end"]) for a in g] for g in got] == \
            [[(a["answer"], a["start"], a["end"]) for a in w] for w in want]
        scores = [a["score"] for w in want for a in w]
        assert [a["score"] for g in got for a in g] == pytest.approx(scores, rel=1e-3, abs=1e-6)


def test_a_request_without_inputs_is_refused_with_the_expected_shape(learned, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("handler_module", learned["span"] / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(learned["span"]))
    with pytest.raises(ValueError, match='Expected {"inputs"'):
        handler({"question": "Who?", "context": "Bob."})
    with pytest.raises(ValueError, match='"parameters" must be an object'):
        handler({"inputs": {"question": "Who?", "context": "Bob."}, "parameters": [3]})
