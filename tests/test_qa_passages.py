"""A question over many passages (`model_folder/qa_passages.py` and the pipeline's reader form), on the learned
models (MiniLM fine-tuned with each head until it answers the sample training questions; 64-token windows, so a
sample passage is cut into two or three windows)."""

import math
import random
import sys

import numpy as np
import pytest
from transformers import pipeline

from model_folder.qa_passages import Collection
from tests.conftest import HEADS

pytestmark = pytest.mark.usefixtures("one_thread")

# Passages beside a question's own: contexts of sample training questions the learned models were not trained on
# (a context they were trained on they may have learned to answer from whatever the question).
DISTRACTORS = 4


@pytest.fixture(scope="module")
def pipes(learned):
    return {head: pipeline("question-answering", model=str(folder), trust_remote_code=True)
            for head, folder in learned.items()}


@pytest.fixture(scope="module")
def asked(learned_questions, unseen_contexts):
    """(question, its own context, contexts it was not trained on) of each answerable learned question."""
    return [(q["question"], q["context"], unseen_contexts[k % 7 :]) for k, q in enumerate(learned_questions)
            if q["answers"]["text"]]


def collection_of(question, own, others, seed):
    """(passages: the own context among DISTRACTORS others, as dicts with ids, in a seeded order; the own one's
    place)."""
    passages = [{"text": own, "id": "own"}, *({"text": c, "id": f"other-{i}"} for i, c in
                                               enumerate(others[:DISTRACTORS]))]
    random.Random(seed).shuffle(passages)
    return passages, next(i for i, p in enumerate(passages) if p["id"] == "own")


def test_a_collection_locates_offsets_of_the_joined_text_in_their_passage():
    collection = Collection.of(["ab", {"text": "cde", "id": 7, "title": "T", "url": "u"}], "input")
    joined = collection.joined
    start = joined.index("de")
    located = collection.located({"answer": "de", "start": start, "end": start + 2, "score": 1.0})
    assert located == {"answer": "de", "start": 1, "end": 3, "score": 1.0, "passage": 1, "passage_id": 7,
                       "title": "T", "meta": {"url": "u"}}
    empty = collection.located({"answer": "", "start": 0, "end": 0, "score": 0.5})
    assert empty["passage"] is None and empty["meta"] == {}


@pytest.mark.parametrize("passages, message", [
    ([], "input: 'passages': no passages; give at least one"),
    ("one text", "input: 'passages': must be a list of passages"),
    (["fine", {"id": "x"}], "KeyError"),
    (["fine", {"text": "  "}], "input: 'passages', passage 1: 'text' must be a non-empty string"),
    (["fine", {"text": "t", "id": True}], "input: 'passages', passage 1: 'id' must be a string or an integer"),
    ([3], "input: 'passages', passage 0: a passage is a string or a {'text'"),
], ids=["empty", "string", "no-text", "blank-text", "bool-id", "number"])
def test_bad_passages_are_refused_naming_the_input_and_the_passage(pipes, passages, message):
    with pytest.raises((ValueError, KeyError)) as error:
        pipes["span"](question="Where?", passages=passages)
    assert message in (error.typename if message == "KeyError" else str(error.value))


@pytest.mark.parametrize("head", HEADS)
def test_each_answer_names_its_passage_and_its_offsets_in_that_passages_text(pipes, asked, head):
    found_own = 0
    for k, (question, own, others) in enumerate(asked):
        passages, own_place = collection_of(question, own, others, seed=k)
        answers = pipes[head](question=question, passages=passages, top_k=5, handle_impossible_answer=True)
        assert sum(not a["answer"] for a in answers) <= 1  # one empty answer for the whole collection
        for answer in answers:
            if answer["answer"]:
                passage = passages[answer["passage"]]
                assert passage["text"][answer["start"]:answer["end"]] == answer["answer"]
                assert answer["passage_id"] == passage["id"] and answer["meta"] == {}
            else:
                assert answer["passage"] is None and answer["passage_id"] is None
        found_own += answers[0]["passage"] == own_place
    # the models answer their training questions: from the passage that holds the answer, whatever else is asked
    assert found_own >= 0.8 * len(asked), (found_own, len(asked))


@pytest.mark.parametrize("head", HEADS)
def test_the_order_of_the_passages_changes_no_answer(pipes, asked, head):
    for k, (question, own, others) in enumerate(asked[:6]):
        results = []
        for seed in (k, k + 100):
            passages, _ = collection_of(question, own, others, seed)
            answers = pipes[head](question=question, passages=passages, top_k=3, handle_impossible_answer=True)
            results.append(sorted((a["answer"], a["passage_id"], a["start"], round(a["score"], 5)) for a in answers))
        assert results[0] == results[1]


@pytest.mark.parametrize("head", HEADS)
def test_one_passage_answers_as_its_context_does(pipes, asked, head):
    """A collection of one passage is a context: the same answers (a CRF's scores too; a span model's differ only
    where the context has several windows: one softmax over them all, not one per window)."""
    for question, own, _ in asked:
        alone = pipes[head](question=question, context=own, top_k=3, handle_impossible_answer=True)
        reader = pipes[head](question=question, passages=[own], top_k=3, handle_impossible_answer=True)
        assert [(a["answer"], a["start"], a["end"]) for a in alone] == \
            [(a["answer"], a["start"], a["end"]) for a in reader]
        if head == "crf":
            assert [a["score"] for a in alone] == pytest.approx([a["score"] for a in reader])


def test_the_same_text_in_two_passages_is_two_answers_with_equal_scores(pipes, asked):
    question, own, _ = asked[0]
    answers = pipes["span"](question=question, passages=[own, {"text": own, "id": "copy"}], top_k=2)
    assert answers[0]["answer"] == answers[1]["answer"] and {a["passage"] for a in answers} == {0, 1}
    assert answers[0]["score"] == pytest.approx(answers[1]["score"])


def test_span_scores_are_one_distribution_over_the_collection(pipes, asked):
    """A span model's reader scores: softmax of the start logits over every window's tokens of every passage,
    times the same for the end logits, so that every answer of the collection, and the empty one, shares a
    denominator: the answers' scores and the empty one's add up to at most 1, and dividing the collection between
    more passages changes them (unlike transformers 4's per-window scores)."""
    question, own, others = asked[0]
    passages, _ = collection_of(question, own, others, seed=0)
    answers = pipes["span"](question=question, passages=passages, top_k=200, handle_impossible_answer=True)
    assert sum(a["score"] for a in answers) <= 1 + 1e-6
    alone = pipes["span"](question=question, passages=[own])
    best = answers[0] if answers[0]["answer"] else answers[1]
    assert best["score"] < alone["score"]  # the other passages' tokens share the probability


def test_a_question_over_passages_costs_the_forward_of_its_windows_in_shared_batches(pipes, asked):
    question, own, others = asked[0]
    passages, _ = collection_of(question, own, others, seed=0)
    qa = pipes["span"]
    item = sys.modules[type(qa).__module__].checked({"question": question, "passages": passages}, "input")
    windows = len(qa.question_windows([item])[0])
    batches = []
    hook = qa.model.register_forward_hook(lambda module, args, kwargs, output: batches.append(
        len(kwargs["input_ids"])), with_kwargs=True)
    try:
        qa([{"question": question, "passages": passages}] * 2, batch_size=64)
    finally:
        hook.remove()
    assert windows > len(passages) and batches == [2 * windows]  # both questions' windows in one batch


@pytest.mark.parametrize("head", HEADS)
def test_every_form_of_the_call_gives_the_same_answers(pipes, asked, head):
    qa = pipes[head]
    items = [{"question": q, "passages": collection_of(q, own, others, seed=k)[0]}
             for k, (q, own, others) in enumerate(asked[:4])]
    one_by_one = [qa(question=item["question"], passages=item["passages"]) for item in items]
    forms = [
        [qa(item) for item in items],
        qa(items),
        qa(question=[i["question"] for i in items], passages=[i["passages"] for i in items]),
        qa(items, batch_size=16),
        list(qa((item for item in items), batch_size=3)),
    ]
    for answers in forms:
        assert [(a["answer"], a["passage"]) for a in answers] == [(a["answer"], a["passage"]) for a in one_by_one]
        assert np.allclose([a["score"] for a in answers], [a["score"] for a in one_by_one], rtol=1e-4)
    # transformers 4's form keeps its meaning: one answer per context
    item = items[0]
    per_context = qa(question=item["question"], context=[p["text"] for p in item["passages"]])
    assert len(per_context) == len(item["passages"]) and all("passage" not in a for a in per_context)


def test_a_question_over_passages_and_a_question_with_a_context_in_one_call(pipes, asked):
    question, own, others = asked[0]
    qa = pipes["span"]
    mixed = qa([{"question": question, "context": own}, {"question": question, "passages": [own, *others[:2]]}],
               batch_size=8)
    assert "passage" not in mixed[0] and mixed[1]["passage"] is not None
    assert mixed[0]["answer"] == qa(question=question, context=own)["answer"]
    assert not math.isnan(mixed[1]["score"])
