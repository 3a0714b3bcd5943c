import builtins
import json
import logging
import os
import types

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from qa_data import questions_from_file
from qa_decoding import WindowCandidates
from utils_qa import (
    OutputError,
    TAG_B,
    TAG_I,
    TAG_O,
    eval_features,
    evaluation_candidates,
    metric_prediction,
    padded_offsets,
    question_predictions,
    train_features,
    write_atomically,
    write_json_atomically,
)
from tests.conftest import SAMPLE


def settings(**overrides):
    base = dict(max_seq_length=384, doc_stride=128, pad_to_max_length=False, n_best_size=20, max_answer_length=30,
                version_2_with_negative=True, null_score_diff_threshold=0.0)
    return types.SimpleNamespace(**{**base, **overrides})


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def questions():
    return questions_from_file(SAMPLE / "train-v2.0.json")


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
    # sorted as evaluation sorts its windows (an indices mapping over the table): offsets in the sorted order
    assert padded_offsets(features.sort("example_index", reverse=True)).tolist() == offsets[::-1].tolist()


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
    candidates = evaluation_candidates("span", (start, end), features, offsets_array, settings())
    result = question_predictions(examples, features, offsets_array, candidates, settings())
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
    raised = question_predictions(examples, features, offsets_array, candidates, settings(null_score_diff_threshold=20.0))
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
    candidates = evaluation_candidates("span", logits, features, offsets, settings())
    result = question_predictions(examples, features, offsets, candidates, settings(version_2_with_negative=False))
    for qid, context in zip(examples["id"], contexts):
        assert result.predictions[qid]
        assert all(a["text"] == context[a["start"]:a["end"]] for a in result.nbest[qid])


def test_every_question_gets_a_prediction_even_without_candidates():
    examples = {"id": ["a"], "context": ["abc"]}
    features = window_dataset([[[-1, -1], [0, 3]]], [0])
    empty = WindowCandidates(*(np.array([], dtype=np.int64) for _ in range(3)), np.array([], dtype=np.float32),
                             np.array([1.0], dtype=np.float32))
    for version_2 in (True, False):
        result = question_predictions(examples, features, padded_offsets(features), empty,
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
    from crf_reference import decode_best_spans
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
        candidates = evaluation_candidates("crf", outputs, features, offsets, settings(n_best_size=k))
        assert np.bincount(candidates.window).max() == k
        # the questions keep their 20 best either way: only what the windows give differs
        results[k] = question_predictions(examples, features, offsets, candidates, settings())
    with torch.no_grad():
        best_only = [t.numpy() for t in decode_best_spans(model, emissions, mask, context_mask)]
    assert best_only[0].shape == (len(mask),)
    results["1-d"] = question_predictions(examples, features, offsets,
                                          evaluation_candidates("crf", best_only, features, offsets, settings()), settings())
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
        assert metric_prediction("q", "beta", odds, settings()) == {
            "id": "q", "prediction_text": "beta", "no_answer_probability": odds}
    assert metric_prediction("q", "beta", None, settings(version_2_with_negative=False)) == {
        "id": "q", "prediction_text": "beta"}


class _StoppedMidway:
    """A file opened for writing that writes the first half of what it is given, then fails (a full disk, a
    killed process)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError("write stopped midway (simulated)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.fixture
def stop_writes_midway(monkeypatch, tmp_path):
    """Call it to make every `open(..., "w"/"wb"/...)` under tmp_path, by any code, write half and fail."""
    real_open = builtins.open

    def open_stopping_midway(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(str(tmp_path))
        return _StoppedMidway(f) if inside and any(flag in mode for flag in "wax+") else f

    return lambda: monkeypatch.setattr(builtins, "open", open_stopping_midway)


def final_files(folder):
    return sorted(name for name in os.listdir(folder) if not name.endswith(".tmp"))


def test_compact_json_is_written_an_entry_at_a_time_as_one_document(tmp_path, monkeypatch):
    nbest = {"q1": [{"text": "Normandé \"x\"", "score": np.float32(1.5), "probability": 0.25}], "q2": [], "q\n3": []}
    written = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode or "x" in mode:
            write = f.write
            f.write = lambda data: written.append(data) or write(data)
        return f

    monkeypatch.setattr(builtins, "open", recording_open)
    write_json_atomically(tmp_path / "nbest.json", nbest, indent=False)
    text = (tmp_path / "nbest.json").read_text(encoding="utf-8")
    assert text == json.dumps({**nbest, "q1": [{**nbest["q1"][0], "score": 1.5}]}, ensure_ascii=False,
                              separators=(",", ":")) + "\n"
    assert len(written) > len(nbest)  # never the whole document in one piece
    write_json_atomically(tmp_path / "empty.json", {}, indent=False)
    assert (tmp_path / "empty.json").read_text() == "{}\n"


def test_a_write_stopped_midway_leaves_the_old_file_or_none(tmp_path, stop_writes_midway, monkeypatch):
    old = tmp_path / "eval_results.json"
    write_json_atomically(old, {"eval_f1": 50.0})
    stop_writes_midway()
    with pytest.raises(OutputError, match=f"Cannot write {old}: write stopped midway"):
        write_json_atomically(old, {"eval_f1": 60.0, "eval_exact": list(range(100))})
    with pytest.raises(OutputError, match="eval_predictions.json: write stopped midway"):
        write_atomically(tmp_path / "eval_predictions.json", b'{"a": "' + b"x" * 1000 + b'"}')
    assert json.loads(old.read_text()) == {"eval_f1": 50.0}  # the old content, complete
    assert os.listdir(tmp_path) == ["eval_results.json"]  # no temporary file left, the new file absent
    monkeypatch.undo()
    # stopped between the write and the rename
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("stopped before the rename")))
    with pytest.raises(OutputError, match="rename"):
        write_json_atomically(old, {"eval_f1": 70.0})
    assert json.loads(old.read_text()) == {"eval_f1": 50.0} and os.listdir(tmp_path) == ["eval_results.json"]


def test_a_full_disk_or_a_read_only_folder_ends_with_a_message_naming_the_file(tmp_path, monkeypatch):
    import errno

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(full))
    with pytest.raises(OutputError, match=f"Cannot write {tmp_path / 'a.json'}: No space left on device"):
        write_json_atomically(tmp_path / "a.json", {"x": 1})
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): no read-only folder to test with")
    with pytest.raises(OutputError, match="locked/a.json: Permission denied"):
        write_json_atomically(tmp_path / "locked" / "a.json", {"x": 1})


def test_the_temporary_file_is_never_opened_through_a_link_planted_at_its_name(tmp_path, monkeypatch):
    import secrets

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    (tmp_path / f".out.json.{'0' * 16}.tmp").symlink_to(victim)
    with pytest.raises(OutputError, match="out.json: File exists"):
        write_json_atomically(tmp_path / "out.json", {"x": 1})
    assert victim.read_text() == "keep me" and not (tmp_path / "out.json").exists()
    monkeypatch.undo()
    write_json_atomically(tmp_path / "out.json", {"x": 1})  # another name: written
    assert json.loads((tmp_path / "out.json").read_text()) == {"x": 1}


def trainer_with_saved_config(output_dir):
    """A stand-in for the trainer of `rewrite_saved_config`: a tiny model config, saved in `output_dir` as training
    saves it."""
    from transformers import BertConfig

    config = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    config.qa_settings = {"max_seq_length": 64, "null_score_diff_threshold": 0.0}
    config.save_pretrained(output_dir)
    return types.SimpleNamespace(model=types.SimpleNamespace(config=config),
                                 args=types.SimpleNamespace(output_dir=str(output_dir)),
                                 is_world_process_zero=lambda: True)


def test_tuned_threshold_rewrites_config_json_under_a_temporary_name(tmp_path, stop_writes_midway):
    from qa_runner import keep_tuned_threshold, rewrite_saved_config

    trainer = trainer_with_saved_config(tmp_path)
    metrics = {"eval_best_f1_null_score_diff_threshold": -61.25}  # null odds units, past sigmoid's range
    assert keep_tuned_threshold(trainer.model.config, metrics)
    stop_writes_midway()
    with pytest.raises(OutputError, match="config.json: write stopped midway"):
        rewrite_saved_config(trainer)
    # config.json is still the old one, complete
    assert json.loads((tmp_path / "config.json").read_text())["qa_settings"]["null_score_diff_threshold"] == 0.0
    assert final_files(tmp_path) == ["config.json"]


def test_tuned_threshold_rewrite_writes_what_save_pretrained_writes(tmp_path):
    from transformers import BertConfig

    from qa_runner import keep_tuned_threshold, rewrite_saved_config

    trainer = trainer_with_saved_config(tmp_path / "model")
    keep_tuned_threshold(trainer.model.config, {"eval_best_f1_null_score_diff_threshold": -61.25})
    rewrite_saved_config(trainer)
    trainer.model.config.save_pretrained(tmp_path / "reference")
    assert (tmp_path / "model" / "config.json").read_text() == (tmp_path / "reference" / "config.json").read_text()
    assert BertConfig.from_pretrained(tmp_path / "model").qa_settings["null_score_diff_threshold"] == -61.25
    assert final_files(tmp_path / "model") == os.listdir(tmp_path / "model") == ["config.json"]
