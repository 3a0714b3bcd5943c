"""Tokenized windows cached on disk: reruns and the other processes of a launch read them, any change of data,
tokenizer or settings tokenizes again, --overwrite_cache and --preprocessing_num_workers work."""

import contextlib
import functools
import logging
import os
import types

import pytest
from transformers import AutoTokenizer

import qa_runner
import utils_qa
from qa_arguments import DataTrainingArguments
from qa_data import questions_from_file
from run_qa import SPAN_HEAD
from tests.conftest import DEV, read_json
from window_cache import tokenizer_identity, windows_key


@pytest.fixture
def tokenizations(monkeypatch):
    """A list that gets one entry per batch of questions tokenized into windows (in this process)."""
    calls = []
    features = utils_qa.window_features

    def counting(questions, *args, **kwargs):
        calls.append(len(questions))
        return features(questions, *args, **kwargs)

    monkeypatch.setattr(utils_qa, "window_features", counting)
    return calls


def evaluate(model, output_dir, cache_dir, *extra):
    qa_runner.main(SPAN_HEAD, ["--model_name_or_path", str(model), "--validation_file", DEV,
                               "--version_2_with_negative", "--do_eval", "--output_dir", str(output_dir), "--cache_dir", str(cache_dir),
                               "--max_seq_length", "128", "--doc_stride", "32", "--report_to", "none", "--new_head",
                               *extra])
    return read_json(output_dir, "eval_nbest_predictions.json")


def test_a_rerun_reads_the_windows_and_a_change_or_overwrite_cache_tokenizes_again(tiny_bert_dir, tmp_path,
                                                                                   tokenizations):
    cache = tmp_path / "cache"
    first = evaluate(tiny_bert_dir, tmp_path / "1", cache)
    assert sum(tokenizations) == 19 and list((cache / "spanbert_qa_windows").glob("*.arrow"))
    tokenizations.clear()
    assert evaluate(tiny_bert_dir, tmp_path / "2", cache) == first and not tokenizations
    assert evaluate(tiny_bert_dir, tmp_path / "3", cache, "--overwrite_cache") == first and sum(tokenizations) == 19
    tokenizations.clear()
    evaluate(tiny_bert_dir, tmp_path / "4", cache, "--doc_stride", "16")  # other windows
    assert sum(tokenizations) == 19
    tokenizations.clear()
    evaluate(tiny_bert_dir, tmp_path / "5", cache, "--max_eval_samples", "5")  # other questions
    assert sum(tokenizations) == 5


def test_worker_processes_tokenize_into_the_same_windows(tiny_bert_dir, tmp_path):
    one = evaluate(tiny_bert_dir, tmp_path / "one", tmp_path / "cache-one")
    assert evaluate(tiny_bert_dir, tmp_path / "two", tmp_path / "cache-two", "--preprocessing_num_workers", "2") == one
    assert len(list((tmp_path / "cache-two" / "spanbert_qa_windows").glob("*_of_00002.arrow"))) == 2


def test_the_other_processes_of_a_launch_read_what_the_main_process_wrote(tiny_bert_dir, tmp_path, tokenizations):
    """Even with --overwrite_cache, which only the main process obeys: the others wait for it and read."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    questions = questions_from_file(DEV)
    data_args = DataTrainingArguments(validation_file=DEV, max_seq_length=128, doc_stride=32, overwrite_cache=True)
    build = functools.partial(utils_qa.eval_features, tokenizer=tokenizer, settings=data_args.qa_settings("span"))

    def process(index):
        return types.SimpleNamespace(local_process_index=index,
                                     main_process_first=lambda desc: contextlib.nullcontext())

    main = qa_runner.split_windows(questions, build, "eval", tokenizer, data_args, process(0), tmp_path)
    assert sum(tokenizations) == 19
    other = qa_runner.split_windows(questions, build, "eval", tokenizer, data_args, process(1), tmp_path)
    assert sum(tokenizations) == 19 and other.to_dict() == main.to_dict()


def test_the_key_ignores_the_tokenizers_call_state_but_not_its_vocabulary(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    questions = questions_from_file(DEV).rows
    key = windows_key(questions, tokenizer, {"max_seq_length": 128})
    tokenizer("a question", "a context", truncation="only_second", max_length=16, padding="max_length")
    assert windows_key(questions_from_file(DEV).rows, tokenizer, {"max_seq_length": 128}) == key
    assert windows_key(questions, tokenizer, {"max_seq_length": 64}) != key
    assert windows_key(questions.select(range(3)), tokenizer, {"max_seq_length": 128}) != key
    lowercase = AutoTokenizer.from_pretrained(tiny_bert_dir, do_lower_case=False)
    assert tokenizer_identity(lowercase) != tokenizer_identity(tokenizer)


def windows_files(cache):
    """The cached windows' Arrow files (not the sort's index files beside them)."""
    return [path for path in (cache / "spanbert_qa_windows").glob("*.arrow") if not path.name.startswith("cache-")]


@pytest.mark.parametrize("damage", ["cut-short", "emptied", "other-windows"])
def test_a_cache_file_damaged_or_replaced_is_tokenized_again_with_a_warning(tiny_bert_dir, tmp_path, tokenizations,
                                                                           caplog, damage):
    cache = tmp_path / "cache"
    first = evaluate(tiny_bert_dir, tmp_path / "1", cache)
    [cached] = windows_files(cache)
    if damage == "cut-short":
        cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    elif damage == "emptied":
        cached.write_bytes(b"")
    else:  # valid windows of the same questions with another stride, under this key's name
        evaluate(tiny_bert_dir, tmp_path / "other", tmp_path / "other-cache", "--doc_stride", "16")
        [other] = windows_files(tmp_path / "other-cache")
        cached.write_bytes(other.read_bytes())
    tokenizations.clear()
    with caplog.at_level(logging.WARNING, logger="window_cache"):
        assert evaluate(tiny_bert_dir, tmp_path / "2", cache) == first
    assert sum(tokenizations) == 19
    assert f"Cached windows at {cached}" in caplog.text and "--overwrite_cache" in caplog.text
    tokenizations.clear()
    assert evaluate(tiny_bert_dir, tmp_path / "3", cache) == first and not tokenizations  # the repaired file is read


@pytest.mark.parametrize("case", ["a-file", "a-dangling-link", "read-only"])
def test_a_cache_folder_that_cannot_be_used_ends_the_run_naming_it(tiny_bert_dir, tmp_path, case):
    cache = tmp_path / "cache"
    folder = cache / "spanbert_qa_windows"
    cache.mkdir()
    if case == "a-file":
        folder.write_text("not a folder")
    elif case == "a-dangling-link":
        folder.symlink_to(tmp_path / "gone")
    else:
        folder.mkdir(mode=0o500)
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root): no read-only folder to test with")
    with pytest.raises(SystemExit) as refused:
        evaluate(tiny_bert_dir, tmp_path / "out", cache)
    assert f"Cannot keep tokenized windows in {folder}" in str(refused.value) and "--cache_dir" in str(refused.value)
