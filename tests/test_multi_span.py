"""Answers in several pieces, end to end: MiniLM fine-tuned with the CRF head on multi-span questions this file
writes (MultiSpanQA's format), evaluated with MultiSpanQA's metric, and its pipeline against evaluation.

The questions ask for the two or three items a context lists ("What are the ferries of Oban?" -> "Osprey",
"Kestrel", "Heron"); 64-token windows with stride 16 cut each context into two or three windows, so answers are
merged across windows.
"""

import json
import random

import pytest
from transformers import pipeline

from qa_data import questions_from_file
from tests.conftest import LEARNED_PADDING, LEARNED_WINDOWS, minilm_path, read_json, train_heads
from tests.independent_scorer import independent_multispan_scores

PLACES = ["Oban", "Tobermory", "Portree", "Mallaig", "Ullapool", "Stornoway", "Kirkwall", "Lerwick"]
KINDS = {
    "ferries": ["Osprey", "Kestrel", "Heron", "Curlew", "Gannet", "Puffin", "Eider", "Merlin"],
    "founders": ["Ada Moss", "Tom Reid", "Ellen Shaw", "Hugh Laird", "Ruth Kerr", "Iain Bell", "Jean Muir"],
    "festivals": ["Harvest Fair", "Lantern Night", "Tide Games", "Winter Market", "Salt Day", "Boat Week"],
}
FILLER = ("the harbour is busy in summer and quiet in winter , when the boats stay in port and the shops close "
          "early").split()
QUESTIONS = 24


def listed(items):
    return " and ".join([" , ".join(items[:-1]), items[-1]]) if len(items) > 1 else items[0]


def multi_span_records(count=QUESTIONS, seed=0):
    """MultiSpanQA records: each context lists two or three items of a kind, among other sentences, and mentions
    one more item of that kind that is not part of the answer."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        place, kind = PLACES[i % len(PLACES)], list(KINDS)[i % len(KINDS)]
        items = rng.sample(KINDS[kind], rng.choice([2, 3]) + 1)
        answer, other = items[:-1], items[-1]
        words, label = [], []
        for sentence, is_answer in ((f"{place} is a small town by the sea .", False), (" ".join(FILLER) + " .", False),
                                    (f"The {kind} of {place} are", False), (listed(answer) + " .", True),
                                    (f"People still speak of {other} , long gone .", False)):
            for word in sentence.split():
                words.append(word)
                starts = {name.split()[0] for name in answer} if is_answer else ()
                inside = is_answer and any(word in name.split()[1:] for name in answer)
                label.append("B" if word in starts else "I" if inside and label[-1] != "O" else "O")
        records.append({"id": f"m{i}", "question": f"what are the {kind} of {place} ?".split(), "context": words,
                        "label": label})
    return records


@pytest.fixture(scope="module")
def multi_span_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("multispan") / "lists.json"
    path.write_text(json.dumps({"version": 1.0, "data": multi_span_records()}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def multi_span_crf(multi_span_file, tmp_path_factory):
    """Folder of MiniLM fine-tuned with the CRF head on the questions and evaluated on them."""
    folder = tmp_path_factory.mktemp("multispan-crf")
    train_heads({"crf": ["--model_name_or_path", minilm_path(), "--train_file", multi_span_file, "--validation_file",
                         multi_span_file, "--do_train", "--do_eval", *LEARNED_WINDOWS, *LEARNED_PADDING,
                         "--num_train_epochs", 12, "--learning_rate", 2e-4, "--head_learning_rate", 1e-2,
                         "--per_device_train_batch_size", 8, "--save_strategy", "no", "--seed", 42,
                         "--report_to", "none", "--disable_tqdm", "true", "--output_dir", folder]})
    return folder


@pytest.fixture(scope="module")
def questions(multi_span_file):
    return questions_from_file(multi_span_file).rows


def test_the_fixture_is_multi_span_with_two_or_three_spans_an_answer(multi_span_file, questions):
    assert questions_from_file(multi_span_file).multi_span
    assert all(len(answers["text"]) in (2, 3) for answers in questions["answers"])


def test_the_crf_answers_with_every_span_and_is_scored_by_multispanqas_metric(multi_span_crf, questions):
    golds = {qid: answers["text"] for qid, answers in zip(questions["id"], questions["answers"])}
    predictions = read_json(multi_span_crf, "eval_predictions.json")
    assert set(predictions) == set(golds) and all(isinstance(spans, list) for spans in predictions.values())
    metrics = read_json(multi_span_crf, "eval_results.json")
    official = independent_multispan_scores(predictions, golds)
    for kind in ("em", "overlap"):
        assert metrics[f"eval_{kind}_f1"] == pytest.approx(official[kind][2])
    assert read_json(multi_span_crf, "config.json")["multi_span"] is True
    # it learned: most spans exactly, and several per question
    assert metrics["eval_em_f1"] >= 80 and sum(len(spans) > 1 for spans in predictions.values()) >= len(golds) // 2


@pytest.fixture(scope="module")
def crf_pipe(multi_span_crf):
    return pipeline("question-answering", model=str(multi_span_crf), trust_remote_code=True)


def test_the_pipeline_answers_with_the_spans_evaluation_predicted(crf_pipe, multi_span_crf, questions):
    predictions = read_json(multi_span_crf, "eval_predictions.json")
    inputs = [{"question": q["question"], "context": q["context"]} for q in questions]
    for batch_size in (1, 8):
        results = crf_pipe(inputs, align_to_words=False, batch_size=batch_size)
        assert {qid: [s["answer"] for s in r["spans"]] for qid, r in zip(questions["id"], results)} == predictions
    for result, question in zip(results, questions):
        spans = result["spans"]
        assert result["answer"] == "; ".join(s["answer"] for s in spans)
        assert (result["start"], result["end"]) == (spans[0]["start"], spans[0]["end"])
        assert [question["context"][s["start"]:s["end"]] for s in spans] == [s["answer"] for s in spans]
        assert all(0 < s["score"] <= 1 for s in spans), spans
        assert [s["start"] for s in spans] == sorted(s["start"] for s in spans) and 0 < result["score"] <= 1


def test_top_k_gives_the_most_probable_paths_as_evaluation_lists_them(crf_pipe, multi_span_crf, questions):
    """The first answer is evaluation's; the next ones are the most probable paths of the question's windows, as the
    n-best file ranks them, each text once (paths that read alike, and the first answer's own, left out)."""
    nbest = read_json(multi_span_crf, "eval_nbest_predictions.json")
    for question in questions.select(range(4)):
        answers = crf_pipe(question=question["question"], context=question["context"], top_k=3, align_to_words=False)
        assert len(answers) == 3 and len({a["answer"] for a in answers}) == 3
        listed = {}
        for entry in nbest[question["id"]]:
            if entry["text"]:
                listed.setdefault(entry["text"].lower(), entry["text"])
        listed.pop(answers[0]["answer"].lower(), None)
        assert [a["answer"] for a in answers[1:]] == list(listed.values())[:2]
        assert answers[1]["score"] >= answers[2]["score"]


def test_over_passages_each_span_names_its_passage_and_a_passage_without_answer_changes_nothing(crf_pipe, questions):
    filler = " ".join(FILLER) + " ."
    for question in questions.select(range(6)):
        alone = crf_pipe(question=question["question"], context=question["context"], align_to_words=False)
        over = crf_pipe(question=question["question"], passages=[filler, {"text": question["context"], "id": "own"}],
                        align_to_words=False)
        assert [(s["answer"], s["start"], s["end"]) for s in over["spans"]] == \
            [(s["answer"], s["start"], s["end"]) for s in alone["spans"]] and alone["spans"]
        assert {(s["passage"], s["passage_id"]) for s in over["spans"]} == {(1, "own")}
        assert over["passage"] == 1 and over["answer"] == alone["answer"]


def test_evaluation_over_passages_names_the_passage_of_every_span_in_the_nbest_file(multi_span_crf, questions,
                                                                                    tmp_path):
    """run_qa_crf.py --do_eval on a reader file (each learned question over a passage without its answer and its own
    context): every n-best path names its passage, and each of its spans its passage and offsets into its text."""
    filler = " ".join(FILLER) + " ."
    records = [{"id": q["id"], "question": q["question"], "answers": {"text": q["answers"]["text"]},
                "passages": [filler, {"text": q["context"], "id": "own"}]} for q in questions.select(range(6))]
    path = tmp_path / "reader.json"
    path.write_text(json.dumps({"data": records}))
    out = tmp_path / "out"
    train_heads({"crf": ["--model_name_or_path", multi_span_crf, "--validation_file", path, "--do_eval",
                         *LEARNED_WINDOWS, "--output_dir", out, "--report_to", "none"]})
    nbest = read_json(out, "eval_nbest_predictions.json")
    for record in records:
        texts = [p if isinstance(p, str) else p["text"] for p in record["passages"]]
        assert nbest[record["id"]][0]["passage"] == 1 and len(nbest[record["id"]][0]["spans"]) >= 2
        for answer in nbest[record["id"]]:
            assert {span["passage"] for span in answer["spans"]} <= {answer["passage"]}
            for span in answer["spans"]:
                assert texts[span["passage"]][span["start"]:span["end"]] == span["text"]
