"""The tokenizer's casing against the checkpoint's: a cased BERT-family checkpoint whose repo has only vocab.txt
(SpanBERT) loads a lowercasing tokenizer; the run warns, and --do_lower_case false keeps the case."""

import json
import logging
import os

import pytest
from transformers import AutoTokenizer, BertConfig, HfArgumentParser

import qa_arguments
import tokenizer_casing
from tests.conftest import ROOT

SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CASED_PIECES = ["The", "the", "Paris", "paris", "France", "france", "is", "in", "capital", "of", "##s", "?", "."]
UNCASED_PIECES = ["the", "paris", "france", "is", "in", "capital", "of", "##s", "?", "."]
TEXT = "The capital of France is Paris."


def checkpoint(parent, name, pieces, **config):
    """A local checkpoint folder as SpanBERT's Hub repo has it: config.json and vocab.txt, no tokenizer files."""
    folder = parent / name
    folder.mkdir()
    vocab = SPECIALS + pieces
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=37, **config).save_pretrained(folder)
    return str(folder)


HUB_KWARGS = {"cache_dir": None, "revision": "main", "token": None, "trust_remote_code": False}


def load(folder, do_lower_case=None):
    return tokenizer_casing.load_tokenizer(folder, HUB_KWARGS, do_lower_case=do_lower_case)


def casing_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tokenizer_casing" and r.levelno == logging.WARNING]


# A folder named as SpanBERT's repo (the name rule) and one with a neutral name (the vocabulary rule alone).
@pytest.fixture(params=["spanbert-tiny-cased", "tiny-encoder"])
def cased_dir(request, tmp_path):
    return checkpoint(tmp_path, request.param, CASED_PIECES)


def test_vocab_only_cased_checkpoint_loads_a_lowercasing_tokenizer(cased_dir):
    """The pitfall: BERT's tokenizer defaults to do_lower_case=True when the repo does not say otherwise."""
    tokenizer = AutoTokenizer.from_pretrained(cased_dir)
    assert tokenizer.tokenize(TEXT)[:5] == ["the", "capital", "of", "france", "is"]
    assert tokenizer("Paris")["input_ids"] == tokenizer("paris")["input_ids"]
    assert tokenizer_casing.tokenizer_lowercases(tokenizer)


def test_lowercasing_tokenizer_of_cased_checkpoint_warns(cased_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(cased_dir)
    assert tokenizer.tokenize("Paris") == ["paris"]
    [message] = casing_warnings(caplog)
    assert "lowercases" in message and "--do_lower_case false" in message
    reason = "name" if cased_dir.endswith("-cased") else "vocabulary holds cased word pieces"
    assert reason in message


def test_do_lower_case_false_keeps_the_case_without_warning(cased_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(cased_dir, do_lower_case=False)
    assert tokenizer.tokenize(TEXT) == ["The", "capital", "of", "France", "is", "Paris", "."]
    assert not tokenizer_casing.tokenizer_lowercases(tokenizer)
    assert casing_warnings(caplog) == []
    # The saved model folder (and so the pipeline) keeps the case without the argument.
    saved = tmp_path / "saved"
    tokenizer.save_pretrained(saved)
    assert AutoTokenizer.from_pretrained(saved).tokenize("Paris") == ["Paris"]
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        load(str(saved))
    assert casing_warnings(caplog) == []


def test_uncased_vocabulary_with_lowercasing_tokenizer_does_not_warn(tmp_path, caplog):
    folder = checkpoint(tmp_path, "tiny-encoder", UNCASED_PIECES)
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(folder)
    assert tokenizer_casing.tokenizer_lowercases(tokenizer)
    assert casing_warnings(caplog) == []


def test_uncased_name_with_lowercasing_tokenizer_does_not_warn(tmp_path, caplog):
    folder = checkpoint(tmp_path, "tiny-encoder-uncased", UNCASED_PIECES)
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        load(folder)
    assert casing_warnings(caplog) == []


def test_config_saying_do_lower_case_false_warns(tmp_path, caplog):
    folder = checkpoint(tmp_path, "tiny-encoder", UNCASED_PIECES, do_lower_case=False)
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        load(folder)
    [message] = casing_warnings(caplog)
    assert "do_lower_case false" in message and "config" in message


def test_minilm_tokenizer_does_not_warn(minilm_dir, caplog):
    """MiniLM: uncased, lowercasing tokenizer (its vocabulary's one upper-case entry, "ℝ", has no lower case)."""
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(minilm_dir)
    assert tokenizer_casing.tokenizer_lowercases(tokenizer)
    assert not tokenizer_casing.cased_vocabulary(tokenizer)
    assert casing_warnings(caplog) == []


def test_parsed_do_lower_case_reaches_the_tokenizer(cased_dir, tmp_path, caplog):
    common = ["--model_name_or_path", cased_dir, "--validation_file", "dev.json", "--output_dir", str(tmp_path / "out")]
    model_args, _, _ = qa_arguments.parse_args(common + ["--do_lower_case", "false"])
    assert model_args.do_lower_case is False
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(model_args.model_name_or_path, model_args.do_lower_case)
    assert tokenizer.tokenize("The Paris") == ["The", "Paris"]
    assert casing_warnings(caplog) == []

    model_args, _, _ = qa_arguments.parse_args(common)
    assert model_args.do_lower_case is None
    with caplog.at_level(logging.WARNING, logger="tokenizer_casing"):
        tokenizer = load(model_args.model_name_or_path, model_args.do_lower_case)
    assert tokenizer.tokenize("The Paris") == ["the", "paris"]
    assert len(casing_warnings(caplog)) == 1


def test_spanbert_config_keeps_the_case():
    with open(os.path.join(ROOT, "configs", "spanbert_squad_v2.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["model_name_or_path"] == "SpanBERT/spanbert-base-cased"
    assert config["do_lower_case"] is False
    model_args, _ = HfArgumentParser(
        (qa_arguments.ModelArguments, qa_arguments.DataTrainingArguments)).parse_dict(config, allow_extra_keys=True)
    assert model_args.do_lower_case is False
