"""The Inference Endpoints handler every model folder carries, loaded as the Endpoints toolkit loads it: from the
folder, in a fresh process that cannot import the project; on transformers 5 and on the toolkit's transformers
4.51 (a side installation beside the venv's torch)."""

import json
import subprocess
import sys
import textwrap

import pytest
from transformers import pipeline

from tests.conftest import HEADS, OUTSIDE_ENV, run_script

# As the toolkit loads a custom handler: the folder first on sys.path, handler.py imported from its file,
# EndpointHandler(path) built once, each request's answer serialised with orjson (which refuses NaN).
ENDPOINT = textwrap.dedent("""
    import importlib.util, json, sys
    import orjson
    assert importlib.util.find_spec("qa_pipeline") is None, "the project is importable"
    folder, requests = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(folder)
    print(json.dumps([json.loads(orjson.dumps(handler(request))) for request in requests]))
""")


def serving(folder, requests, tmp_path, site=None, **variables):
    """The handler's process run on `requests`: a fresh one outside the project, `site` (a side installation)
    first on its path, `variables` in its environment."""
    env = {**OUTSIDE_ENV, **({"PYTHONPATH": str(site)} if site else {}), **variables}
    return run_script([sys.executable, "-c", ENDPOINT, str(folder), json.dumps(requests)], cwd=tmp_path, env=env,
                      stderr=subprocess.PIPE)


def served(folder, requests, tmp_path, site=None, **variables):
    """The answers the handler's process gives to `requests`."""
    result = serving(folder, requests, tmp_path, site, **variables)
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("head", HEADS)
def test_an_endpoint_answers_as_the_pipeline_does(learned, learned_questions, unseen_contexts, tmp_path, head):
    assert (learned[head] / "handler.py").exists()
    items = [{"question": q["question"], "context": q["context"]} for q in learned_questions.select(range(6))]
    parameters = {"top_k": 3, "handle_impossible_answer": True, "align_to_words": False}
    # a question over passages (the reader's form), beside a context the model was not trained on: answers naming
    # their passage
    over = {"question": items[0]["question"], "passages": [unseen_contexts[0], {"text": items[0]["context"],
                                                                               "id": "own"}]}
    answers = served(learned[head], [{"inputs": items[0]}, {"inputs": items, "parameters": parameters},
                                     {"inputs": over, "parameters": {"top_k": 2}}], tmp_path)
    qa = pipeline("question-answering", model=str(learned[head]), trust_remote_code=True)
    expected = [[qa(items[0])], qa(items, **parameters), [qa(over, top_k=2)]]
    assert expected[0][0]["answer"] and len(answers[1]) == 6 and all(len(answer) == 3 for answer in answers[1])
    assert answers[2][0][0]["passage_id"] == "own" and answers[2][0][0]["answer"] == expected[0][0]["answer"]
    for got, want in zip(answers, expected):  # float noise between processes moves the scores, not the answers
        got, want = ([[a] if isinstance(a, dict) else a for a in answer] for answer in (got, want))
        assert [[(a["answer"], a["start"], a["end"], a.get("passage")) for a in g] for g in got] == \
            [[(a["answer"], a["start"], a["end"], a.get("passage")) for a in w] for w in want]
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


def test_a_span_folder_serves_on_the_toolkits_transformers_4_as_on_5(learned, learned_questions, transformers_4,
                                                                      tmp_path):
    """Through the handler and through pipeline() on transformers 4.51 (whose own question-answering task the
    folder's pipeline replaces): the answers transformers 5 gives, and the folder's requirements are met."""
    assert "transformers>=4.51" in (learned["span"] / "requirements.txt").read_text()
    items = [{"question": q["question"], "context": q["context"]} for q in learned_questions.select(range(6))]
    requests = [{"inputs": items, "parameters": {"top_k": 2, "handle_impossible_answer": True}}]
    on_4 = served(learned["span"], requests, tmp_path, site=transformers_4)
    on_5 = served(learned["span"], requests, tmp_path)
    assert [[(a["answer"], a["start"], a["end"]) for a in answer] for answer in on_4[0]] == \
        [[(a["answer"], a["start"], a["end"]) for a in answer] for answer in on_5[0]]
    assert [a["score"] for answer in on_4[0] for a in answer] == \
        pytest.approx([a["score"] for answer in on_5[0] for a in answer], rel=1e-3, abs=1e-6)
    assert sum(bool(answer[0]["answer"]) for answer in on_4[0]) >= 3


def test_a_crf_folder_on_transformers_4_fails_at_start_saying_what_it_needs(learned, transformers_4, tmp_path):
    requirements = (learned["crf"] / "requirements.txt").read_text()
    assert "transformers>=5.24,<6" in requirements and "pytorch-crf==0.7.2" in requirements
    result = serving(learned["crf"], [], tmp_path, site=transformers_4)
    assert result.returncode != 0
    assert "The CRF question-answering model needs transformers 5" in result.stderr
    assert "this process has transformers 4.51.3: pip install -r requirements.txt" in result.stderr


def test_the_endpoints_bf16_switch_answers_every_request_as_the_pipeline_under_bf16(learned, learned_questions,
                                                                                   tmp_path):
    items = [{"question": q["question"], "context": q["context"]} for q in learned_questions.select(range(6))]
    parameters = {"handle_impossible_answer": True, "align_to_words": False}
    result = serving(learned["span"], [{"inputs": items, "parameters": parameters}], tmp_path, SPANBERT_QA_BF16="1")
    assert result.returncode == 0, result.stderr[-5000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])[0]
    qa = pipeline("question-answering", model=str(learned["span"]), trust_remote_code=True)
    expected = qa(items, bf16=True, **parameters)
    assert [(a["answer"], a["start"], a["end"]) for a in answers] == \
        [(a["answer"], a["start"], a["end"]) for a in expected]
    assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in expected], rel=1e-2, abs=1e-6)
    assert [a["score"] for a in answers] != pytest.approx([a["score"] for a in qa(items, **parameters)], rel=1e-6)
    from model_folder.qa_pipeline import cpu_has_bf16

    assert ("torch emulates them" in result.stderr) == (cpu_has_bf16() is False)


@pytest.mark.parametrize("value, compiled", [("1", True), ("0", False)])
def test_the_endpoints_compile_switch_builds_a_compiled_pipeline(learned, monkeypatch, value, compiled):
    """Compiled lazily: building the handler costs no compilation (the pipeline's test answers with one)."""
    from model_folder.handler import EndpointHandler

    monkeypatch.setenv("SPANBERT_QA_TORCH_COMPILE", value)
    qa = EndpointHandler(str(learned["span"])).pipeline
    assert qa.compiled is compiled
    assert (getattr(qa.model.base_model, "_compiled_call_impl", None) is not None) is compiled
