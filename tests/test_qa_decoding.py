"""Each head's window decoding and the answers per question, which evaluation and the pipeline share: unit tests on
small arrays, and end to end on MiniLM fine-tuned with each head until it answers (the `learned` fixture)."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import pipeline

import qa_runner
from model_folder.qa_decoding import ModelOutputError, multi_span_answers, window_candidates
from tests.conftest import HEADS, LEARNED_QUESTIONS, LEARNED_WINDOWS, TRAIN, read_json
from tests.test_run_qa import HEAD_OF


def test_span_candidates_are_each_windows_n_best_and_its_cls_score():
    start = np.array([[5.0, 1.0, 3.0, 0.0], [0.0, 2.0, 0.0, 9.0]], dtype=np.float32)
    end = np.array([[4.0, 0.0, 1.0, 2.0], [1.0, 0.0, 3.0, 1.0]], dtype=np.float32)
    context = np.array([[False, True, True, True], [False, True, True, False]])
    candidates = window_candidates("span", (start, end), context, np.array([0, 0]), n_best=2, max_answer_length=2)
    spans = list(zip(candidates.window.tolist(), candidates.start.tolist(), candidates.end.tolist(),
                     candidates.score.tolist()))
    # window 0: (2, 3) 3 + 2, then (2, 2) 3 + 1 and (1, 3)... too long; window 1: (1, 2) 2 + 3, then (2, 2) 0 + 3
    assert spans == [(0, 2, 3, 5.0), (0, 2, 2, 4.0), (1, 1, 2, 5.0), (1, 2, 2, 3.0)]
    assert candidates.window_null.tolist() == [9.0, 1.0]


def test_crf_candidates_are_the_models_decoded_paths_cut_to_n_best():
    outputs = (np.array([[3, 1, 0]]), np.array([[4, 1, 0]]), np.array([[-0.5, -1.0, -np.inf]]), np.array([-2.0]))
    candidates = window_candidates("crf", outputs, np.ones((1, 6), bool), np.array([0]), n_best=5, max_answer_length=30)
    spans = (candidates.start.tolist(), candidates.end.tolist(), candidates.score.tolist())
    assert spans == ([3, 1], [4, 1], [-0.5, -1.0])
    assert window_candidates("crf", outputs, np.ones((1, 6), bool), np.array([0]), 1, 30).start.tolist() == [3]


# Two windows of one question over "Ann, Bob and Cy came." (characters: Ann 0-3, Bob 5-8, Cy 13-15, came 16-20),
# tokens t with offsets OFFSETS[window][t]; window 0 holds tokens of Ann and Bob, window 1 of Bob and Cy.
CONTEXT = "Ann, Bob and Cy came."
OFFSETS = np.array([[[-1, -1], [0, 3], [5, 8], [9, 12]], [[-1, -1], [5, 8], [9, 12], [13, 15]]])


def paths_of(paths, null):
    """`WindowPaths` as the model returns them: `paths` {window: [(log P, [(start, end, log marginal), ...]), ...]}."""
    outputs = [[], [], [], [], [], []]
    width = max(len(spans) for listed in paths.values() for _, spans in listed)
    for window in range(len(null)):
        listed = paths.get(window, [])
        spans = [(p, span) for p, (_, spans) in enumerate(listed) for span in spans]
        pad = 4 * width - len(spans)
        outputs[0].append([s[0] for _, s in spans] + [0] * pad)
        outputs[1].append([s[1] for _, s in spans] + [0] * pad)
        outputs[2].append([s[2] for _, s in spans] + [-np.inf] * pad)
        outputs[3].append([p for p, _ in spans] + [-100] * pad)  # the Trainer pads with -100
        outputs[4].append([score for score, _ in listed] + [-np.inf] * (3 - len(listed)))
        outputs[5].append(null[window])
    return window_candidates("multi_span", [np.array(o) for o in outputs], None, None, 3, None)


def answers_of(paths, with_null, threshold=0.0):
    return multi_span_answers([CONTEXT], np.array([0, 0]), OFFSETS, paths, 3, with_null, threshold)[0]


def test_multi_span_answers_merge_the_windows_that_answer_each_context_span_once():
    paths = paths_of({0: [(-1.0, [(1, 1, -0.1), (2, 2, -0.7)]), (-2.0, [(1, 1, -0.1)])],
                      1: [(-1.5, [(1, 1, -0.3), (3, 3, -0.2)])]}, null=[-3.0, -4.0])
    best, ranked, odds = answers_of(paths, with_null=False)
    # Bob (5-8) is in both windows' best paths: once, window 0's copy, though window 1's is more probable: window 1's
    # is its first context token, where the context goes on before it (in window 0), so it may be a piece of a longer
    # span that window 1 cuts; Ann and Cy from one window each
    assert [s["text"] for s in best["spans"]] == ["Ann", "Bob", "Cy"]
    assert [s["score"] for s in best["spans"]] == pytest.approx([-0.1, -0.7, -0.2])
    assert best["text"] == "Ann; Bob; Cy" and best["score"] == -1.0 and odds == -2.5  # the least of -2 and -2.5
    assert [a["text"] for a in ranked] == ["Ann; Bob", "Bob; Cy", "Ann"]
    assert sum(a["probability"] for a in ranked) == pytest.approx(1.0)


def test_a_span_a_window_edge_cuts_gives_way_to_the_whole_copy_of_its_words_in_another_window():
    """Window 0 ends at "and" (9-12) while the context goes on in window 1: its "and" may be cut short ("and Cy"),
    and window 1's whole "and Cy" (9-15), which ends where the context does, is kept though the cut copy is more
    probable."""
    paths = paths_of({0: [(-1.0, [(3, 3, -0.1)])], 1: [(-1.5, [(2, 3, -0.9)])]}, null=[-3.0, -4.0])
    best, _, _ = answers_of(paths, with_null=False)
    assert [s["text"] for s in best["spans"]] == ["and Cy"]


def test_non_finite_model_outputs_are_refused_with_a_message_not_a_shape_error():
    start = np.array([[0.0, 1.0, np.nan, 2.0]], dtype=np.float32)
    with pytest.raises(ModelOutputError, match="The model's outputs are not finite numbers"):
        window_candidates("span", (start, np.zeros_like(start)), np.array([[False, True, True, True]]), np.array([0]),
                          20, 30)
    with pytest.raises(ModelOutputError):  # +inf logits: a diverged fp16 run
        window_candidates("span", (np.full_like(start, np.inf), np.zeros_like(start)),
                          np.array([[False, True, True, True]]), np.array([0]), 20, 30)
    crf = [np.array([[1, 0]]), np.array([[2, 0]]), np.array([[-0.5, -np.inf]]), np.array([np.nan])]
    with pytest.raises(ModelOutputError):
        window_candidates("crf", crf, None, None, 20, 30)
    crf[3] = np.array([-1.0])  # -inf marks the paths a window does not have: decoded
    assert window_candidates("crf", crf, None, None, 20, 30).score.tolist() == [-0.5]


def test_a_window_less_likely_than_its_all_o_path_contributes_nothing_and_the_threshold_moves_that():
    paths = paths_of({0: [(-1.0, [(1, 1, -0.1)])], 1: [(-2.0, [(3, 3, -0.2)])]}, null=[-3.0, -1.5])
    assert answers_of(paths, with_null=True)[0]["text"] == "Ann"
    assert answers_of(paths, with_null=True, threshold=0.6)[0]["text"] == "Ann; Cy"
    paths = paths_of({0: [(-4.0, [(1, 1, -0.1)])], 1: [(-5.0, [(3, 3, -0.2)])]}, null=[-3.0, -1.5])
    best, ranked, odds = answers_of(paths, with_null=True)
    assert best["spans"] == [] and odds == 1.0 and ranked[0] == {"text": "", "spans": [], "score": -3.0,
                                                                    "probability": ranked[0]["probability"]}
    # every question has an answer without SQuAD v2: the most probable path's
    assert answers_of(paths, with_null=False)[0]["text"] == "Ann"


# --- end to end: evaluation's answers depend on neither the n-best size nor the tokenizer's padding side -----------

def evaluate(head, model, output_dir, *extra):
    qa_runner.main(HEAD_OF[head], [
        "--model_name_or_path", str(model), "--validation_file", TRAIN, "--version_2_with_negative",
        "--max_eval_samples", str(LEARNED_QUESTIONS), *map(str, LEARNED_WINDOWS), "--do_eval",
        "--output_dir", str(output_dir), "--per_device_eval_batch_size", "8", "--report_to", "none", *extra])
    return {name: read_json(output_dir, f"eval_{name}.json") for name in ("predictions", "null_odds")}


@pytest.fixture(scope="module")
def left_padding(learned, tmp_path_factory):
    """{head: a copy of the learned model folder whose tokenizer pads on the left, as XLNet's and others' do}."""
    folders = {}
    for head, folder in learned.items():
        copy = tmp_path_factory.mktemp(f"left-{head}") / "model"
        shutil.copytree(folder, copy)
        path = copy / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "padding_side": "left"}))
        folders[head] = copy
    return folders


@pytest.mark.parametrize("head", HEADS)
def test_n_best_size_one_gives_the_same_answers_and_null_odds_as_twenty(learned, tmp_path, head):
    expected = {name: read_json(learned[head], f"eval_{name}.json") for name in ("predictions", "null_odds")}
    assert sum(bool(text) for text in expected["predictions"].values()) >= LEARNED_QUESTIONS // 2
    assert evaluate(head, learned[head], tmp_path, "--n_best_size", "1") == expected


@pytest.mark.parametrize("head", HEADS)
def test_a_left_padding_tokenizer_gives_the_same_answers_in_evaluation_and_the_pipeline(
        learned, left_padding, learned_questions, tmp_path, head):
    expected = {name: read_json(learned[head], f"eval_{name}.json") for name in ("predictions", "null_odds")}
    assert sum(bool(text) for text in expected["predictions"].values()) >= LEARNED_QUESTIONS // 2
    got = evaluate(head, left_padding[head], tmp_path)
    assert got["predictions"] == expected["predictions"]
    assert got["null_odds"] == pytest.approx(expected["null_odds"], abs=1e-4)
    qa = pipeline("question-answering", model=str(left_padding[head]), trust_remote_code=True)
    assert qa.tokenizer.padding_side == "left"
    questions = [{"question": q["question"], "context": q["context"]} for q in learned_questions]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # batched: windows of several lengths padded together
        answers = qa(questions, batch_size=8, handle_impossible_answer=True, align_to_words=False,
                     null_score_diff_threshold=0.0)
    finally:
        torch.set_num_threads(threads)
    assert {qid: a["answer"] for qid, a in zip(learned_questions["id"], answers)} == expected["predictions"]
