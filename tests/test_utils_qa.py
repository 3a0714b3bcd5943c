import logging
import warnings

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from model_folder.crf_decoding import TAG_B, TAG_I, TAG_O
from model_folder.qa_decoding import WindowCandidates
from model_folder.qa_settings import QASettings
from qa_data import QuestionSet, questions_from_file
from tests.conftest import SAMPLE
from utils_qa import (
    eval_features,
    evaluation_candidates,
    longest_first,
    metric_prediction,
    padded_offsets,
    question_predictions,
    train_features,
)


def settings(**overrides):
    """The settings of the tests below: SQuAD v2's, the examples' windows."""
    return QASettings(**{"version_2_with_negative": True, **overrides})


def question_set(examples):
    """A `QuestionSet` of question columns (ids and contexts are all post-processing reads)."""
    return QuestionSet(datasets.Dataset.from_dict(examples))


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def questions():
    return questions_from_file(SAMPLE / "train-v2.0.json").rows


def columns(batch):
    return batch.to_dict()


def test_span_labels_point_at_the_answer_tokens_or_at_cls(tokenizer, questions):
    batch = questions.select(range(20))
    features = train_features(columns(batch), list(range(20)), tokenizer, settings(), "span")
    for w, q in enumerate(features["example_index"]):
        start, end = features["start_positions"][w], features["end_positions"][w]
        answers = batch[q]["answers"]
        if answers["text"]:
            decoded = tokenizer.decode(features["input_ids"][w][start : end + 1])
            assert decoded.replace(" ", "") == answers["text"][0].lower().replace(" ", "")
        else:
            assert start == end == features["cls_index"][w]


def long_context_question():
    context = " ".join(f"word{i}" for i in range(300)) + " The answer is Zanzibar."
    return {"id": ["q"], "title": [""], "context": [context], "question": ["What is the answer?"],
            "answers": [{"text": ["Zanzibar"], "answer_start": [context.index("Zanzibar")]}]}


def test_answer_outside_a_window_is_labelled_cls_and_inside_its_window_at_its_tokens(tokenizer):
    batch = long_context_question()
    features = train_features(batch, [0], tokenizer, settings(max_seq_length=128, doc_stride=32), "span")
    assert len(features["input_ids"]) > 2
    inside = [w for w in range(len(features["input_ids"])) if features["start_positions"][w] != 0]
    assert inside and inside[-1] == len(features["input_ids"]) - 1
    for w in range(len(features["input_ids"])):
        s, e = features["start_positions"][w], features["end_positions"][w]
        if w in inside:
            assert tokenizer.decode(features["input_ids"][w][s : e + 1]) == "zanzibar"
        else:
            assert s == e == 0


def test_bio_tags_mark_the_answer_and_nothing_else(tokenizer, questions):
    batch = questions.select(range(20))
    span = train_features(columns(batch), list(range(20)), tokenizer, settings(), "span")
    bio = train_features(columns(batch), list(range(20)), tokenizer, settings(), "bio")
    for w, tags in enumerate(bio["labels"]):
        tags = np.array(tags)
        assert len(tags) == len(bio["input_ids"][w])
        start, end = span["start_positions"][w], span["end_positions"][w]
        if start == end == span["cls_index"][w]:
            assert (tags == TAG_O).all()
        else:
            expected = np.full(len(tags), TAG_O)
            expected[start] = TAG_B
            expected[start + 1 : end + 1] = TAG_I
            assert (tags == expected).all()
            assert bio["context_mask"][w][start] and bio["context_mask"][w][end]


def test_every_span_of_a_multi_span_answer_is_tagged_as_far_as_each_window_holds_it(tokenizer):
    """A window tags B I* on each span it holds, and the part it holds of a span that its edge cuts; a window
    without the spans is all O. Without `every_span` only the first span is tagged."""
    words = [f"w{i}" for i in range(60)]
    context = " ".join(words)
    texts = ["w5 w6", "w30 w31 w32 w33 w34 w35 w36 w37", "w57"]
    batch = {"id": ["q"], "title": [""], "context": [context], "question": ["Which?"],
             "answers": [{"text": texts, "answer_start": [context.index(t + " ") for t in texts]}]}
    args = settings(max_seq_length=48, doc_stride=16)
    features = train_features(batch, [0], tokenizer, args, "bio", every_span=True)
    single = train_features(batch, [0], tokenizer, args, "bio")
    seen = set()
    for w, tags in enumerate(features["labels"]):
        ids = features["input_ids"][w]
        spans, current = [], None
        for token, tag in zip(ids, tags):
            if tag == TAG_B:
                current = [token]
                spans.append(current)
            elif tag == TAG_I:
                current.append(token)
        decoded = [tokenizer.decode(span).replace(" ", "") for span in spans]
        window_text = tokenizer.decode(ids).replace(" ", "")
        for text in texts:
            whole = text.replace(" ", "")
            if whole in window_text:  # held whole: tagged whole
                assert whole in decoded
                seen.add(text)
        # every tagged run is a whole span or, at the window's edge, a piece of one
        assert all(any(piece in text.replace(" ", "") for text in texts) for piece in decoded)
        assert np.count_nonzero(np.array(single["labels"][w]) == TAG_B) <= 1
    assert seen == set(texts)
    cut = [w for w, tags in enumerate(features["labels"]) if features["context_mask"][w][-2] and tags[-2] != TAG_O]
    assert cut, "no window cuts the long span at its edge"


def test_a_question_longer_than_the_window_is_truncated_with_a_warning(tokenizer, caplog):
    batch = long_context_question()
    batch["question"] = ["why " * 400 + "?"]
    with caplog.at_level(logging.WARNING):
        features = train_features(batch, [0], tokenizer, settings(max_seq_length=128, doc_stride=32), "span")
    assert "1 question(s) are longer than" in caplog.text and "q" in caplog.text
    assert all(len(ids) <= 128 for ids in features["input_ids"])
    assert any(s != 0 for s in features["start_positions"])


def test_eval_offsets_cover_only_the_context(tokenizer, questions):
    batch = questions.select(range(5))
    features = eval_features(columns(batch), list(range(5)), tokenizer, settings())
    for w, offsets in enumerate(features["offset_mapping"]):
        offsets = np.array(offsets)
        mask = np.array(features["context_mask"][w])
        assert ((offsets[:, 0] >= 0) == mask).all()
        context = batch[features["example_index"][w]]["context"]
        covered = context[offsets[mask][0, 0] : offsets[mask][-1, 1]]
        assert tokenizer(covered, add_special_tokens=False)["input_ids"] == np.array(features["input_ids"][w])[mask].tolist()


def window_dataset(offsets_per_window, example_index, cls_index=None):
    return datasets.Dataset.from_dict({
        "offset_mapping": offsets_per_window, "example_index": example_index,
        "cls_index": cls_index or [0] * len(example_index),
    })


def test_padded_offsets_match_the_ragged_column():
    features = window_dataset([[[-1, -1], [0, 3], [4, 8]], [[-1, -1], [2, 5]]], [0, 1])
    offsets = padded_offsets(features)
    assert offsets.tolist() == [[[-1, -1], [0, 3], [4, 8]], [[-1, -1], [2, 5], [-1, -1]]]
    # reordered as evaluation orders its windows (an indices mapping over the table): offsets in the new order
    assert padded_offsets(features.select([1, 0])).tolist() == offsets[::-1].tolist()


def test_longest_first_keeps_the_order_of_equal_lengths_and_warns_nothing():
    windows = datasets.Dataset.from_dict({"length": [3, 5, 3, 5, 1], "name": ["a", "b", "c", "d", "e"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ordered = longest_first(windows)
    assert ordered["name"][:] == ["b", "d", "a", "c", "e"]


def test_question_predictions_group_windows_and_apply_the_null_threshold():
    contexts = ["alpha beta gamma", "delta epsilon"]
    examples = {"id": ["a", "b"], "context": contexts}
    # window 0 and 1 belong to question a, window 2 to question b; token 0 is [CLS]
    offsets = [[[-1, -1], [0, 5], [6, 10], [11, 16]], [[-1, -1], [6, 10], [11, 16], [-1, -1]],
               [[-1, -1], [0, 5], [6, 13], [-1, -1]]]
    features = window_dataset(offsets, [0, 0, 1])
    start = np.array([[1.0, 0.0, 5.0, 0.0], [3.0, 0.0, 0.0, 2.0], [9.0, 0.0, 1.0, -5.0]], dtype=np.float32)
    end = np.array([[1.0, 0.0, 4.0, 1.0], [3.0, 0.0, 0.0, 6.0], [9.0, 0.0, 1.0, -5.0]], dtype=np.float32)
    offsets_array = padded_offsets(features)
    candidates = evaluation_candidates(settings(), (start, end), features, offsets_array)
    result = question_predictions(question_set(examples), features, offsets_array, candidates, settings())
    # a: best span "beta" (window 0: 5 + 4 = 9); null = min(1 + 1, 3 + 3) = 2; odds = 2 - 9 < 0 -> answered
    assert result.predictions["a"] == "beta" and result.null_odds["a"] == pytest.approx(-7.0)
    # b: best span "delta epsilon" (0 + 1 = 1... "epsilon" 1 + 1 = 2 wins); null 18; odds 16 > 0 -> ""
    assert result.predictions["b"] == "" and result.null_odds["b"] == pytest.approx(16.0)
    assert [p["prediction_text"] for p in result.metric_predictions] == ["beta", "epsilon"]
    # the metric gets the raw null odds, compared with the same threshold (no sigmoid squashing them)
    assert [p["no_answer_probability"] for p in result.metric_predictions] == [result.null_odds["a"],
                                                                               result.null_odds["b"]]
    for qid, context in zip(examples["id"], contexts):
        assert sum(a["probability"] for a in result.nbest[qid]) == pytest.approx(1.0)
        assert all(a["text"] == context[a["start"]:a["end"]] for a in result.nbest[qid] if a["text"])
    raised = question_predictions(question_set(examples), features, offsets_array, candidates,
                                  settings(null_score_diff_threshold=20.0))
    assert raised.predictions["b"] == "epsilon"


def test_unicode_contexts_keep_answers_equal_to_their_context_slice(tokenizer):
    contexts = ["東京は日本の首都です。人口は約1400万人です。", "Cafe\u0301 owners in ספרד sell 🍰 cake daily.",
                "المدينة القديمة جميلة جدا"]
    examples = {"id": ["x", "y", "z"], "title": [""] * 3, "context": contexts, "question": ["What?"] * 3,
                "answers": [{"text": [], "answer_start": []}] * 3}
    features = datasets.Dataset.from_dict(eval_features(examples, [0, 1, 2], tokenizer, settings()))
    offsets = padded_offsets(features)
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=offsets.shape[:2]).astype(np.float32) for _ in range(2)]
    candidates = evaluation_candidates(settings(), logits, features, offsets)
    result = question_predictions(question_set(examples), features, offsets, candidates,
                                  settings(version_2_with_negative=False))
    for qid, context in zip(examples["id"], contexts):
        assert result.predictions[qid]
        assert all(a["text"] == context[a["start"]:a["end"]] for a in result.nbest[qid])


def test_every_question_gets_a_prediction_even_without_candidates():
    examples = {"id": ["a"], "context": ["abc"]}
    features = window_dataset([[[-1, -1], [0, 3]]], [0])
    empty = WindowCandidates(*(np.array([], dtype=np.int64) for _ in range(3)), np.array([], dtype=np.float32),
                             np.array([1.0], dtype=np.float32))
    for version_2 in (True, False):
        result = question_predictions(question_set(examples), features, padded_offsets(features), empty,
                                      settings(version_2_with_negative=version_2))
        assert result.predictions == {"a": ""} and len(result.metric_predictions) == 1


def crf_windows(seed=0):
    """Questions, windows, padded offsets, emissions and masks of a tiny random CRF: 3 questions over 6 windows of
    12-16 tokens ([CLS], 2 question tokens, [SEP], context words, [SEP]), windows of a question overlapping."""
    rng = np.random.default_rng(seed)
    contexts = [" ".join(f"w{q}x{i}" for i in range(n)) for q, n in enumerate((14, 9, 20))]
    starts = {0: [0, 6], 1: [0], 2: [0, 6, 12]}  # first context word of each window
    offsets, example_index = [], []
    for q, context in enumerate(contexts):
        words, position = [], 0
        for word in context.split(" "):
            words.append([position, position + len(word)])
            position += len(word) + 1
        for first in starts[q]:
            shown = words[first : first + 8 + (q + first) % 3]
            offsets.append([[-1, -1]] * 4 + shown + [[-1, -1]])
            example_index.append(q)
    features = window_dataset(offsets, example_index)
    padded = padded_offsets(features)
    lengths = torch.tensor([len(o) for o in offsets])
    mask = torch.arange(padded.shape[1])[None] < lengths[:, None]
    context_mask = torch.from_numpy(padded[..., 0] >= 0)
    emissions = torch.from_numpy(rng.normal(size=(*padded.shape[:2], 3)) * 2).float()
    emissions[:3, :, 0] += 30.0  # confident windows: path scores ~1e3
    examples = {"id": ["a", "b", "c"], "context": contexts}
    return examples, features, padded, emissions, mask, context_mask


def test_crf_candidates_keep_the_best_answer_and_null_odds_for_any_n_best_size():
    """A CRF window now gives its n_best_size best single-span paths: a question's n-best list grows beyond one span
    per window, while evaluation's answer and null odds per question stay the same, exactly, as with one span per
    window (and as with the one-dimensional outputs of the earlier best-path-only model)."""
    from tests.crf_reference import decode_best_spans
    from modeling_crf import CrfForQuestionAnswering, CrfQAConfig
    from transformers import BertConfig

    torch.manual_seed(0)
    model = CrfForQuestionAnswering(CrfQAConfig(encoder=BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)))
    with torch.no_grad():
        for param in (model.crf.start_transitions, model.crf.end_transitions, model.crf.transitions):
            param.copy_(torch.randn(param.shape) * 2)
    examples, features, offsets, emissions, mask, context_mask = crf_windows()
    windows_per_question = np.bincount(np.asarray(features["example_index"]))
    results = {}
    for k in (1, 20):
        with torch.no_grad():
            outputs = [t.numpy() for t in model.decode_nbest_spans(emissions, mask, context_mask, n_best_size=k)]
        assert outputs[0].shape == (len(mask), k)
        candidates = evaluation_candidates(settings(head="crf", n_best_size=k), outputs, features, offsets)
        assert np.bincount(candidates.window).max() == k
        # the questions keep their 20 best either way: only what the windows give differs
        results[k] = question_predictions(question_set(examples), features, offsets, candidates, settings())
    with torch.no_grad():
        best_only = [t.numpy() for t in decode_best_spans(model, emissions, mask, context_mask)]
    assert best_only[0].shape == (len(mask),)
    results["1-d"] = question_predictions(question_set(examples), features, offsets,
                                          evaluation_candidates(settings(head="crf"), best_only, features, offsets),
                                          settings())
    for other in (20, "1-d"):
        assert results[other].predictions == results[1].predictions
        assert results[other].null_odds == results[1].null_odds  # exactly: the same float32 scores
        assert results[other].metric_predictions == results[1].metric_predictions
    assert all(p["prediction_text"] for p in results[1].metric_predictions)  # each question's best span
    for q, qid in enumerate(examples["id"]):
        spans = {k: [a for a in results[k].nbest[qid] if a["text"]] for k in (1, 20)}
        assert len(spans[1]) == windows_per_question[q] and len(spans[20]) == 20
        assert spans[20][0] == spans[1][0] | {"probability": spans[20][0]["probability"]}
        scores = [a["score"] for a in spans[20]]
        assert scores == sorted(scores, reverse=True)
        assert all(a["text"] == examples["context"][q][a["start"]:a["end"]] for a in spans[20])


def test_metric_prediction_passes_null_odds_of_any_size_unchanged():
    for odds in (-80.0, -60.0, 0.0, 55.0, 90.0, float("inf")):  # +inf: a question without any non-empty candidate
        assert metric_prediction("q", "beta", odds) == {
            "id": "q", "prediction_text": "beta", "no_answer_probability": odds}
    assert metric_prediction("q", "beta") == {
        "id": "q", "prediction_text": "beta"}
