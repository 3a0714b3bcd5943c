"""The question-answering pipeline that every saved model folder carries, on MiniLM fine-tuned with each head
until it answers its training questions (the `learned` fixture).

Those models were trained and evaluated with short windows (64 tokens, stride 16), so evaluation already splits
every sample context into several windows, and the pipeline takes those settings from the model's config.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import pipeline

from tests.conftest import HEADS, read_json

EVAL_THRESHOLD = 0.0  # the --null_score_diff_threshold evaluation ran with (the default)


def offline_env(**extra):
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on threads that wait for a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipes(learned):
    """{head: pipeline} loaded in this process from the model learned' own code."""
    return {head: pipeline("question-answering", model=str(folder), trust_remote_code=True)
            for head, folder in learned.items()}


@pytest.fixture(scope="module")
def long_context(learned_questions):
    """Every distinct sample context in one text: several 64-token windows long."""
    return " ".join(dict.fromkeys(learned_questions["context"]))


def dicts(questions):
    return [{"question": q["question"], "context": q["context"]} for q in questions]


def spans(answers):
    return [(a["answer"], a["start"], a["end"]) for a in answers]


def pipeline_function(pipe, name):
    """A helper of the folder's qa_pipeline module (it imports relatively, so only the loaded copy is usable)."""
    return getattr(sys.modules[type(pipe).__module__], name)


# --- the user's call, in a process that cannot import the project --------------------------------------------

USER_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    from transformers import pipeline

    assert importlib.util.find_spec("qa_pipeline") is None, "the project is importable"
    context = "The Eiffel Tower in Paris was completed in 1889. Gustave Eiffel's company designed and built it."
    for folder in sys.argv[1:]:
        qa = pipeline("question-answering", model=folder, trust_remote_code=True)
        answer = qa(question="When was the tower completed?", context=context)
        print(json.dumps({"folder": folder, "module": type(qa).__module__, "context": context, **answer}))
""")


def test_the_users_call_in_a_fresh_process_outside_the_project(learned, tmp_path):
    env = offline_env()
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", USER_SCRIPT, *map(str, learned.values())], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["folder"] for line in lines] == [str(f) for f in learned.values()]
    for line in lines:
        assert line["module"].startswith("transformers_modules.") and line["module"].endswith(".qa_pipeline")
        assert line["answer"] and line["answer"] == line["context"][line["start"] : line["end"]]
        assert 0.0 <= line["score"] <= 1.0


# --- the pipeline answers as evaluation did ----------------------------------------------------------------------

def split_threshold(null_odds):
    """A no-answer threshold between two of the questions' null odds, far from both: some questions get "" and
    some a span, and float noise cannot move a question across it."""
    odds = sorted(null_odds)
    middle = range(len(odds) // 4, 3 * len(odds) // 4)
    k = max(middle, key=lambda i: odds[i + 1] - odds[i])
    assert odds[k + 1] - odds[k] > 1e-3, "no gap between the null odds to put a threshold in"
    return (odds[k] + odds[k + 1]) / 2


def tie_blocks(keys, scores, tolerance=1e-4):
    """`keys` (in ranked order) cut into runs whose `scores` (descending) are within `tolerance` of each other, each
    run sorted: the order that float noise between batched and single windows cannot change."""
    blocks, previous = [], None
    for key, score in zip(keys, scores, strict=True):
        if previous is None or previous - score > tolerance:
            blocks.append([])
        blocks[-1].append(key)
        previous = score
    return [sorted(block) for block in blocks]


@pytest.mark.parametrize("head", HEADS)
def test_answers_equal_the_evaluation_predictions(pipes, learned, learned_questions, head):
    predictions = read_json(learned[head], "eval_predictions.json")
    assert sum(text != "" for text in predictions.values()) >= len(predictions) // 2
    results = pipes[head](dicts(learned_questions), handle_impossible_answer=True, align_to_words=False,
                          null_score_diff_threshold=EVAL_THRESHOLD)
    assert {qid: r["answer"] for qid, r in zip(learned_questions["id"], results)} == predictions


@pytest.mark.parametrize("head", HEADS)
def test_any_threshold_decides_no_answer_as_evaluation_would(pipes, learned, learned_questions, head):
    """Evaluation answers "" when its null odds exceed the threshold, else its best span (the first n-best text)."""
    null_odds = read_json(learned[head], "eval_null_odds.json")
    nbest = read_json(learned[head], "eval_nbest_predictions.json")
    threshold = split_threshold(null_odds.values())
    expected = {qid: "" if null_odds[qid] > threshold else next(a["text"] for a in nbest[qid] if a["text"])
                for qid in learned_questions["id"]}
    assert 0 < sum(text == "" for text in expected.values()) < len(expected)
    results = pipes[head](dicts(learned_questions), handle_impossible_answer=True, align_to_words=False,
                          null_score_diff_threshold=threshold)
    assert {qid: r["answer"] for qid, r in zip(learned_questions["id"], results)} == expected


@pytest.mark.parametrize("head", HEADS)
def test_top_k_answers_are_the_evaluation_n_best_in_order(pipes, learned, learned_questions, head):
    nbest = read_json(learned[head], "eval_nbest_predictions.json")
    n_best_size = read_json(learned[head], "config.json")["qa_settings"]["n_best_size"]
    results = pipes[head](dicts(learned_questions), top_k=n_best_size, handle_impossible_answer=False,
                          align_to_words=False)
    for qid, answers in zip(learned_questions["id"], results):
        spans = [a for a in nbest[qid] if a["text"]]
        scores = [a["score"] for a in spans]
        expected = tie_blocks([(a["text"], a["start"], a["end"]) for a in spans], scores)
        assert tie_blocks([(a["answer"], a["start"], a["end"]) for a in answers], scores) == expected, qid


@pytest.mark.parametrize("head", HEADS)
def test_window_and_threshold_defaults_come_from_the_config(pipes, learned, learned_questions, long_context, head):
    settings = read_json(learned[head], "config.json")["qa_settings"]
    assert (settings["max_seq_length"], settings["doc_stride"]) == (64, 16)
    explicit = {"max_seq_len": 64, "doc_stride": 16, "null_score_diff_threshold": settings["null_score_diff_threshold"]}
    question = {"question": learned_questions["question"][0], "context": long_context}
    defaults = pipes[head](question, top_k=5, handle_impossible_answer=True)
    assert defaults == pipes[head](question, top_k=5, handle_impossible_answer=True, **explicit)


# --- long contexts, batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEADS)
def test_a_context_of_several_windows_gives_the_same_answers_in_any_batch_size(pipes, learned_questions, long_context,
                                                                               head):
    pipe = pipes[head]
    assert len(pipe.tokenizer(long_context)["input_ids"]) > 3 * 64
    questions = [{"question": q, "context": long_context} for q in learned_questions["question"][:3]]
    by_batch = {size: pipe(questions, max_seq_len=64, doc_stride=16, top_k=5, batch_size=size) for size in (1, 4)}
    for one, four in zip(by_batch[1], by_batch[4]):
        assert spans(one) == spans(four)
        assert [a["score"] for a in one] == pytest.approx([a["score"] for a in four], abs=1e-5)
        for answer in one:
            assert 0 <= answer["start"] < answer["end"] <= len(long_context)
            assert answer["answer"] == long_context[answer["start"] : answer["end"]]


def test_a_batch_of_questions_gets_one_answer_each_in_order(pipes, learned_questions):
    pipe = pipes["span"]
    questions = dicts(learned_questions.select(range(5)))
    one_by_one = [pipe(**q) for q in questions]
    assert pipe(question=[q["question"] for q in questions], context=[q["context"] for q in questions]) == one_by_one
    assert pipe(questions) == one_by_one
    batched = pipe(questions, batch_size=3)
    assert spans(batched) == spans(one_by_one)
    assert [r["score"] for r in batched] == pytest.approx([r["score"] for r in one_by_one], abs=1e-5)
    assert pipe(tuple(questions)) == one_by_one
    # one question about several contexts, and the (question, context) positional form
    contexts = [q["context"] for q in questions]
    question = questions[0]["question"]
    assert pipe(question=question, context=contexts) == [pipe(question, c) for c in contexts]
    assert pipe(question=[], context=[]) == []


# --- no answer ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEADS)
def test_the_threshold_decides_between_no_answer_and_a_span(pipes, learned_questions, head):
    pipe, questions = pipes[head], dicts(learned_questions.select(range(6)))
    for result in pipe(questions, handle_impossible_answer=True, null_score_diff_threshold=-1e9):
        assert (result["answer"], result["start"], result["end"]) == ("", 0, 0)
    for result in pipe(questions, handle_impossible_answer=True, null_score_diff_threshold=1e9):
        assert result["answer"]
    for threshold in (-1e9, 0.0, None):
        for answers in pipe(questions, handle_impossible_answer=False, null_score_diff_threshold=threshold, top_k=3):
            assert all(a["answer"] for a in answers)


def test_parameters_given_when_building_the_pipeline_stay_in_force(learned, learned_questions):
    pipe = pipeline("question-answering", model=str(learned["span"]), trust_remote_code=True, top_k=3,
                    handle_impossible_answer=True, null_score_diff_threshold=-1e9)
    first = learned_questions[0]
    answers = pipe(question=first["question"], context=first["context"])
    assert len(answers) == 3 and answers[0]["answer"] == ""
    # a call-time parameter overrides only itself
    assert pipe(question=first["question"], context=first["context"], top_k=1)["answer"] == ""


# --- ranking and word alignment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("threshold", [None, -5.0, 5.0])
def test_top_k_is_sorted_by_score(pipes, learned_questions, long_context, head, threshold):
    """Also with a no-answer threshold, which moves the empty answer away from its raw score's place."""
    questions = dicts(learned_questions.select(range(4))) + [
        {"question": learned_questions["question"][0], "context": long_context}]
    for answers in pipes[head](questions, top_k=10, handle_impossible_answer=threshold is not None,
                               null_score_diff_threshold=threshold, max_seq_len=64, doc_stride=16):
        scores = [a["score"] for a in answers]
        assert scores == sorted(scores, reverse=True) and len(answers) <= 10
        assert sum(scores) <= 1.0 + 1e-6


def test_word_alignment_widens_spans_to_whole_words(pipes):
    word_aligned = pipeline_function(pipes["span"], "word_aligned")
    context = "unbelievable things, 1889s-era"
    assert word_aligned(context, 2, 6) == (0, 12)
    assert word_aligned(context, 0, 12) == (0, 12)
    assert word_aligned(context, 14, 19) == (13, 19)
    assert word_aligned(context, 22, 23) == (21, 26)  # "-" separates words


# Words of several word pieces each: most token boundaries fall inside a word, so unaligned spans cut words.
LONG_WORDS = ("Pneumonoultramicroscopicsilicovolcanoconiosis and floccinaucinihilipilification were "
              "antidisestablishmentarianism's supercalifragilisticexpialidocious hippopotomonstrosesquippedaliophobia.")


@pytest.mark.parametrize("head", HEADS)
def test_aligned_answers_never_cut_a_word(pipes, learned_questions, head):
    questions = dicts(learned_questions) + [{"question": "Which words are long?", "context": LONG_WORDS}]
    aligned = pipes[head](questions, top_k=20, align_to_words=True)
    raw = pipes[head](questions, top_k=20, align_to_words=False)
    widened = 0
    for question, answers, unaligned in zip(questions, aligned, raw):
        context = question["context"]
        for answer, original in zip(answers, unaligned):
            start, end = answer["start"], answer["end"]
            assert answer["answer"] == context[start:end]
            assert start <= original["start"] and original["end"] <= end
            assert not (start > 0 and context[start - 1].isalnum() and context[start].isalnum())
            assert not (end < len(context) and context[end - 1].isalnum() and context[end].isalnum())
            widened += (start, end) != (original["start"], original["end"])
    assert head == "crf" or widened, "no span needed widening: the check proved nothing"


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda qa: qa(question="", context="Paris is in France."), "'question' must be a non-empty string"),
    (lambda qa: qa(question="Where?", context="   "), "'context' must be a non-empty string"),
    (lambda qa: qa({"question": "Where?"}), "'context' must be a non-empty string"),
    (lambda qa: qa([{"question": "Where?", "context": "Paris."}, {"question": " ", "context": "x"}]),
     "input 1: 'question'"),
    (lambda qa: qa(question=["Where?", "Who?"], context=["Paris.", "Bob.", "Ann."]), "2 questions but 3 contexts"),
    (lambda qa: qa(question="Where?"), "Give question=... and context=..."),
    (lambda qa: qa(question=None, context="Paris."), "question must be a string or a list of strings"),
    (lambda qa: qa("Where is Paris?"), "Expected a {'question', 'context'} dict"),
    (lambda qa: qa(question="Where?", context="\u200b\u200b"), "has no text the tokenizer keeps"),
    (lambda qa: qa(question="Where?", context="Paris.", top_k=0), "top_k must be an integer >= 1"),
    (lambda qa: qa(question="Where?", context="Paris.", max_seq_len=64, doc_stride=32),
     "doc_stride 32 must be less than half"),
    (lambda qa: qa(question="Where?", context="Paris.", max_seq_len=100_000), "longer than the model's 512 tokens"),
], ids=["empty-question", "blank-context", "missing-context", "bad-item-in-list", "mismatched-lists", "no-context",
        "question-none", "lone-string", "no-tokens", "top_k-0", "stride-too-long", "window-too-long"])
def test_bad_input_is_refused_with_a_clear_message(pipes, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(pipes["span"])


def test_a_shorter_window_than_evaluations_shrinks_the_stride_to_fit(pipes, long_context):
    """max_seq_len alone below twice evaluation's stride (16) works: the stride is cut to a quarter window."""
    answer = pipes["span"](question="What is the tide?", context=long_context, max_seq_len=30)
    assert answer["answer"] == long_context[answer["start"] : answer["end"]]
