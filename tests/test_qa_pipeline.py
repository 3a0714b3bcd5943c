"""The question-answering pipeline that every saved model folder carries, on MiniLM fine-tuned with each head
until it answers its training questions (the `learned` fixture).

Those models were trained and evaluated with short windows (64 tokens, stride 16), so evaluation already splits
every sample context into several windows, and the pipeline takes those settings from the model's config.
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import pipeline

from tests.conftest import HEADS, OUTSIDE_ENV, read_json, run_script

EVAL_THRESHOLD = 0.0  # the --null_score_diff_threshold evaluation ran with (the default)


pytestmark = pytest.mark.usefixtures("one_thread")


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
    result = run_script([sys.executable, "-c", USER_SCRIPT, *map(str, learned.values())], cwd=tmp_path, env=OUTSIDE_ENV,
                        stderr=subprocess.PIPE)
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


# How evaluation runs in bf16, and how the pipeline is asked to run as it did: autocast (the Trainer's --bf16), or
# the weights cast (--bf16_full_eval; the pipeline loaded with transformers' dtype=)
BF16_WAYS = {"autocast": ("--bf16", {}, {"bf16": True}),
             "weights": ("--bf16_full_eval", {"dtype": torch.bfloat16}, {})}


@pytest.mark.parametrize("way", BF16_WAYS)
@pytest.mark.parametrize("head", HEADS)
def test_in_bf16_the_pipeline_answers_as_evaluation_in_bf16(pipes, learned, learned_questions, tmp_path, head, way):
    """The encoder in bf16 either way, the CRF and the decoding in float32 and float64 in both: the same answers. (Not
    the same n-best lists: past the first few spans, bf16's rounding, which differs with the batch a window is run in,
    reorders spans whose scores are close.) On a CPU without bf16 instructions torch emulates bf16, slower."""
    import qa_runner
    from tests.conftest import LEARNED_QUESTIONS, LEARNED_WINDOWS, TRAIN
    from tests.test_run_qa import HEAD_OF

    flag, loading, calling = BF16_WAYS[way]
    out = tmp_path / "bf16"
    qa_runner.main(HEAD_OF[head], ["--model_name_or_path", str(learned[head]), "--validation_file", TRAIN,
                                   "--version_2_with_negative", "--max_eval_samples", str(LEARNED_QUESTIONS),
                                   *map(str, LEARNED_WINDOWS), "--do_eval", flag, "--use_cpu",
                                   "--null_score_diff_threshold", str(EVAL_THRESHOLD), "--output_dir", str(out),
                                   "--per_device_eval_batch_size", "8", "--report_to", "none"])
    predictions, odds = read_json(out, "eval_predictions.json"), read_json(out, "eval_null_odds.json")
    assert odds != read_json(learned[head], "eval_null_odds.json")  # bf16 ran: other scores than float32's
    assert sum(text != "" for text in predictions.values()) >= len(predictions) // 2
    qa = pipeline("question-answering", model=str(learned[head]), trust_remote_code=True, **loading)
    results = qa(dicts(learned_questions), handle_impossible_answer=True, align_to_words=False,
                 null_score_diff_threshold=EVAL_THRESHOLD, **calling)
    assert {qid: r["answer"] for qid, r in zip(learned_questions["id"], results)} == predictions
    in_float32 = pipes[head](dicts(learned_questions), handle_impossible_answer=True, align_to_words=False,
                             null_score_diff_threshold=EVAL_THRESHOLD)
    assert [r["score"] for r in results] != pytest.approx([r["score"] for r in in_float32], rel=1e-6)  # in bf16


@pytest.mark.parametrize("head", HEADS)
def test_a_compiled_encoder_answers_as_the_eager_one(pipes, learned, learned_questions, head):
    """torch_compile=True compiles the encoder in place, its weights frozen into the compiled code: the same answers
    with the same scores, up to float rounding. Compiling is a setting of the pipeline, refused per call."""
    qa = pipeline("question-answering", model=str(learned[head]), trust_remote_code=True, torch_compile=True)
    assert qa.model.base_model._compiled_call_impl is not None  # the encoder is compiled
    call = {"handle_impossible_answer": True, "align_to_words": False, "null_score_diff_threshold": EVAL_THRESHOLD}
    results, eager = qa(dicts(learned_questions), **call), pipes[head](dicts(learned_questions), **call)
    assert sum(r["answer"] != "" for r in results) >= len(results) // 2
    assert [r["answer"] for r in results] == [r["answer"] for r in eager]
    assert [r["score"] for r in results] == pytest.approx([r["score"] for r in eager], rel=1e-3, abs=1e-6)
    with pytest.raises(ValueError, match=r"torch_compile is given when the pipeline is built"):
        qa(question="Who?", context="Nobody.", torch_compile=True)


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
    """Evaluation's n-best list with the spans of equal text (ignoring case) merged into the best one, as the pipeline
    merges them, is the start of the pipeline's top_k list: the same decoder found both."""
    nbest = read_json(learned[head], "eval_nbest_predictions.json")
    n_best_size = read_json(learned[head], "config.json")["qa_settings"]["n_best_size"]
    results = pipes[head](dicts(learned_questions), top_k=n_best_size, handle_impossible_answer=False,
                          align_to_words=False)
    lengths = []
    for qid, answers in zip(learned_questions["id"], results):
        merged = {}
        for answer in nbest[qid]:
            if answer["text"]:
                merged.setdefault(answer["text"].lower(), answer)
        expected = [(a["text"], a["start"], a["end"]) for a in merged.values()]
        scores = [a["score"] for a in merged.values()]
        # float noise between a window run alone and in a batch may swap spans whose scores are within 1e-4
        assert tie_blocks(spans(answers)[: len(expected)], scores) == tie_blocks(expected, scores), qid
        lengths.append(len(expected))
    assert min(lengths) >= 5


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
        assert [a["score"] for a in one] == pytest.approx([a["score"] for a in four], rel=1e-4, abs=1e-5)
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
def test_top_k_gives_as_many_distinct_answers_as_asked_or_as_exist(pipes, learned_questions, head):
    """Exactly min(top_k, distinct valid answers) answers, no two of the same text (ignoring case); one window,
    no empty answer: the scores never increase (a merged answer adds its duplicates' scores to its own)."""
    pipe = pipes[head]
    short = {"question": "Who kept the light?", "context": "Margaret Hollis kept the light, and Margaret kept it well."}
    tokens = len(pipe.tokenizer(short["context"], add_special_tokens=False)["input_ids"])
    for top_k in (1, 5, 40):
        for align_to_words in (True, False):
            answers = pipe(short, top_k=top_k, align_to_words=align_to_words, max_answer_len=tokens)
            answers = [answers] if top_k == 1 else answers
            texts = [a["answer"].lower() for a in answers]
            assert len(set(texts)) == len(texts)
            assert all(a["answer"] == short["context"][a["start"] : a["end"]] for a in answers)
            assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
            if head == "span":  # every valid span is a candidate: as many answers as distinct texts
                spans = {short["context"][s:e].lower() for s, e in distinct_spans(pipe, short["context"],
                                                                                   align_to_words)}
                assert len(answers) == min(top_k, len(spans)), (top_k, align_to_words)
            else:  # the model's best single-span paths of its one window (n_best_size of them)
                assert len(answers) == top_k if top_k <= 5 else len(answers) >= 5
    for question in dicts(learned_questions.select(range(4))):
        answers = pipe(question, top_k=10, max_seq_len=384)
        assert len(answers) == 10 and len({a["answer"].lower() for a in answers}) == 10


@pytest.mark.parametrize("head", HEADS)
def test_a_huge_top_k_gives_every_answer_and_asks_the_model_for_no_more_paths_than_a_window_has_spans(
        pipes, head, monkeypatch):
    """top_k=10**6 on a one-window context: the answers of top_k = every single span of the window (context tokens x
    the longest answer), and a CRF model is asked for no more paths than that."""
    pipe = pipes[head]
    short = {"question": "Who kept the light?", "context": "Margaret Hollis kept the light, and Margaret kept it well."}
    tokens = len(pipe.tokenizer(short["context"], add_special_tokens=False)["input_ids"])
    most = tokens * min(tokens, pipe.settings.max_answer_length)
    asked, forward = [], pipe.model.forward
    monkeypatch.setattr(pipe.model, "forward", lambda **inputs: asked.append(inputs.get("n_best_size")) or
                        forward(**inputs))
    every = pipe(short, top_k=most, handle_impossible_answer=True)
    assert pipe(short, top_k=10**6, handle_impossible_answer=True) == every and len(every) > 5
    assert asked == ([None, None] if head == "span" else [most, most])


def test_a_context_is_read_for_its_words_only_where_answers_align_to_words(pipes, learned_questions, monkeypatch):
    pipe = pipes["span"]
    questions = dicts(learned_questions.select(range(4)))
    aligned = pipe(questions, batch_size=2, align_to_words=True)
    reads, module = [], sys.modules[type(pipe).__module__]
    words_of = module.context_words
    monkeypatch.setattr(module, "context_words", lambda *args: reads.append(args) or words_of(*args))
    for batch_size in (1, 2):
        answers = pipe(questions, batch_size=batch_size, align_to_words=False)
        assert all(a["answer"] == q["context"][a["start"] : a["end"]] for a, q in zip(answers, questions))
        assert reads == []
    assert pipe(questions, batch_size=2) == aligned and reads


def test_topk_is_top_k_as_transformers_4_took_it_with_a_deprecation_warning(pipes):
    short = {"question": "Who kept the light?", "context": "Margaret Hollis kept the light, and Margaret kept it well."}
    with pytest.warns(FutureWarning, match="`topk` is deprecated: use `top_k`"):
        answers = pipes["span"](short, topk=3)
    assert answers == pipes["span"](short, top_k=3) and len(answers) == 3
    assert pipes["span"](short, padding="max_length") == pipes["span"](short)  # accepted: no answer depends on it


def distinct_spans(pipe, context, align_to_words):
    """Every character span (start, end) a one-window answer can have: a span of context tokens, widened to the
    tokenizer's words when aligned."""
    encoded = pipe.tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    offsets, words = encoded["offset_mapping"], encoded.word_ids()
    bounds = [encoded.word_to_chars(words[t]) if align_to_words else offsets[t] for t in range(len(offsets))]
    return {(bounds[s][0], bounds[e][1]) for s in range(len(offsets)) for e in range(s, len(offsets))}


def test_span_scores_are_transformers_4_scores(pipes, learned_questions):
    """The library's score: softmax of the window's start logits times softmax of its end logits, both over its
    context tokens and [CLS], computed here from the model's logits."""
    pipe = pipes["span"]
    for question in dicts(learned_questions.select(range(6))):
        encoded = pipe.tokenizer(question["question"], question["context"], return_tensors="pt",
                                 return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping")[0].tolist()
        allowed = torch.tensor([sid == 1 for sid in encoded.sequence_ids(0)])
        allowed[0] = True  # [CLS]
        with torch.no_grad():
            output = pipe.model(**encoded)
        start = torch.softmax(output.start_logits[0].double().masked_fill(~allowed, -torch.inf), 0)
        end = torch.softmax(output.end_logits[0].double().masked_fill(~allowed, -torch.inf), 0)
        for answer in pipe(question, top_k=5, align_to_words=False, max_seq_len=384):
            s = next(t for t, (a, b) in enumerate(offsets) if allowed[t] and t > 0 and a == answer["start"])
            e = next(t for t, (a, b) in enumerate(offsets) if allowed[t] and t > 0 and b == answer["end"])
            assert answer["score"] == pytest.approx((start[s] * end[e]).item(), abs=1e-6)
        null = pipe(question, top_k=30, align_to_words=False, max_seq_len=384, handle_impossible_answer=True)
        assert next(a["score"] for a in null if a["answer"] == "") == pytest.approx((start[0] * end[0]).item(),
                                                                                      abs=1e-6)


def test_crf_scores_are_probabilities_and_span_scores_add_up_as_transformers_4s(pipes, learned_questions, long_context):
    """Equal texts found in several windows are one answer: a CRF model's keeps its most probable path's probability
    (at most 1), a span model's the sum of its windows' probabilities, as transformers 4 reports it."""
    questions = [{"question": q["question"], "context": long_context} for q in learned_questions.select(range(8))]
    crf = [a["score"] for answers in pipes["crf"](questions, top_k=20) for a in answers]
    assert max(crf) <= 1.0 and max(crf) > 0.5
    span = [a["score"] for answers in pipes["span"](questions, top_k=20) for a in answers]
    assert max(span) > 1.0  # a text found in overlapping windows, each confident


def test_answers_widen_to_the_tokenizers_words_not_to_runs_of_letters(pipes):
    """Chinese and Japanese characters are words of their own for BERT's tokenizer: an aligned answer is not
    widened to the whole run of letters (a sentence); "1889s-era" holds three words."""
    pipe = pipes["span"]
    for context in ("東京は日本の首都です。大阪は大きな都市です。", "unbelievable things, 1889s-era clocks"):
        encoded = pipe.tokenizer(context, add_special_tokens=False)
        words = {encoded.word_to_chars(w) for w in set(encoded.word_ids())}
        starts, ends = {w.start for w in words}, {w.end for w in words}
        for answer in pipe(question="What is it?", context=context, top_k=15):
            assert answer["start"] in starts and answer["end"] in ends, answer


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
        for answer in answers:
            start, end = answer["start"], answer["end"]
            assert answer["answer"] == context[start:end]
            assert not (start > 0 and context[start - 1].isalnum() and context[start].isalnum())
            assert not (end < len(context) and context[end - 1].isalnum() and context[end].isalnum())
        widened += bool({a["answer"] for a in unaligned} - {a["answer"] for a in answers})
    assert widened, "no span needed widening: the check proved nothing"


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda qa: qa(question="", context="Paris is in France."), "'question' must be a non-empty string"),
    (lambda qa: qa(question="Where?", context="   "), "'context' must be a non-empty string"),
    (lambda qa: qa({"question": "Where?", "context": None}), "'context' must be a non-empty string, got None"),
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
    (lambda qa: qa(question=["Where?"], context=["Paris."], batch_size="2"), "batch_size must be an integer >= 1, got '2'"),
    (lambda qa: qa(question=["Where?"], context=["Paris."], batch_size=2.5), "batch_size must be an integer >= 1, got 2.5"),
    (lambda qa: qa(question="Where?", context="Paris.", num_workers=-1), "num_workers must be an integer >= 0"),
    (lambda qa: qa(question="Where?", context="Paris.", null_score_diff_threshold="1"),
     "null_score_diff_threshold must be a finite number, got '1'"),
    (lambda qa: qa(question="Where?", context="Paris.", null_score_diff_threshold=float("nan")),
     "null_score_diff_threshold must be a finite number, got nan"),
    (lambda qa: qa(question="Where?", context="Paris.", handle_impossible_answer="yes"),
     "handle_impossible_answer must be True or False, got 'yes'"),
    (lambda qa: qa(question="Where?", context="Paris.", align_to_words=1), "align_to_words must be True or False"),
    (lambda qa: qa(question="Where?", context="Paris.", max_answer_len=True), "max_answer_len must be an integer"),
    (lambda qa: qa(question="Where?", context="Paris.", max_answer_length=5),
     "Unknown parameter(s) of the question-answering pipeline: max_answer_length (its parameters: top_k,"),
    (lambda qa: qa(question="Where?", context="Paris.", handle_impossible=True), "Unknown parameter(s)"),
    (lambda qa: qa(question="Where?", context="Paris.", padding="both"), "padding must be one of"),
    (lambda qa: qa(question="Who? \ud83d", context="Paris."),
     "input: 'question' holds an unpaired surrogate at character 5"),
], ids=["empty-question", "blank-context", "none-context", "bad-item-in-list", "mismatched-lists", "no-context",
        "question-none", "lone-string", "no-tokens", "top_k-0", "stride-too-long", "window-too-long", "batch-str",
        "batch-float", "workers-negative", "threshold-str", "threshold-nan", "impossible-str", "align-int",
        "answer-len-bool", "unknown-parameter", "unknown-flag", "padding-unknown", "lone-surrogate"])
def test_bad_input_is_refused_with_a_clear_message(pipes, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(pipes["span"])


def test_a_shorter_window_than_evaluations_shrinks_the_stride_to_fit(pipes, long_context):
    """max_seq_len alone below twice evaluation's stride (16) works: the stride is cut to a quarter window."""
    answer = pipes["span"](question="What is the tide?", context=long_context, max_seq_len=30)
    assert answer["answer"] == long_context[answer["start"] : answer["end"]]


@pytest.mark.parametrize("call", [
    lambda qa: qa({"question": "Where?"}),
    lambda qa: qa([{"question": "Where?", "context": "Paris."}, {"context": "Paris."}]),
    lambda qa: list(qa(item for item in [{"question": "Where?", "context": "Paris."}, {"question": "Where?"}])),
], ids=["dict", "list", "generator"])
def test_a_dict_without_a_key_raises_key_error_as_transformers_4(pipes, call):
    with pytest.raises(KeyError, match="has no '(question|context)' key"):
        call(pipes["span"])


# --- every input form of transformers 4, and streaming --------------------------------------------------------

def test_every_input_form_gives_the_same_answers(pipes, learned_questions):
    pipe = pipes["span"]
    questions = dicts(learned_questions.select(range(3)))
    one_by_one = [pipe(**q) for q in questions]
    assert [pipe(X=q) for q in questions] == one_by_one
    assert pipe(X=questions) == pipe(data=questions) == one_by_one
    assert list(pipe(q for q in questions)) == one_by_one
    assert list(pipe(iter(questions))) == one_by_one  # any iterable
    rows = [dict(q, id=f"q{i}", title="extra keys are ignored") for i, q in enumerate(questions)]
    assert list(pipe(row for row in rows)) == one_by_one


@pytest.mark.parametrize("head", HEADS)
def test_a_dataset_streamed_in_batches_answers_as_unbatched_calls(pipes, learned_questions, long_context, head):
    """A `datasets.Dataset` of questions (with its other columns) streamed through the pipeline with batch_size=8:
    an iterator of results, in order, equal to one call per question (windows of a long context included)."""
    pipe = pipes[head]
    dataset = learned_questions.add_item({**learned_questions[0], "id": "long", "context": long_context})
    unbatched = [pipe(question=row["question"], context=row["context"], top_k=3) for row in dataset]
    streamed = pipe(dataset, batch_size=8, top_k=3)
    assert not isinstance(streamed, list)
    streamed = list(streamed)
    assert len(streamed) == len(dataset)
    for one, batched in zip(unbatched, streamed):
        assert spans(one) == spans(batched)
        assert [a["score"] for a in one] == pytest.approx([a["score"] for a in batched], rel=1e-4, abs=1e-5)

