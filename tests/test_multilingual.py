"""Multilingual extractive QA end to end: TyDiQA-GoldP-shaped questions (official SQuAD JSON, every question
answerable, so scored as SQuAD v1.1) in Arabic, Russian, Korean and Bengali, written for this project
(tests/fixtures/tydiqa-goldp-sample.json), trained on for a few steps, evaluated, and asked again through the saved
model folder's pipeline.

Two tiny random encoders, one of each tokenizer family the README recommends for languages other than English:
- "bert": BERT with MiniLM's real WordPiece tokenizer, whose normalizer lowercases and strips accents, so the text
  it cuts is not the context: Korean syllables become jamo (several tokens then share one character of the
  context), Arabic harakat and the marks of Russian й and ё are dropped;
- "xlmr": XLM-RoBERTa with a sentencepiece (Unigram) vocabulary trained here on the sample, as multilingual
  checkpoints such as xlm-roberta-base have: words start with "▁", often a token of its own that shares its
  offsets with the word's first character, and the windows have no token type ids.
Every answer must be the context's own text at the answer's offsets, never empty, and the pipeline's best answer
must be evaluation's.
"""

import json
import unicodedata

import pytest
import torch
from tokenizers import SentencePieceUnigramTokenizer
from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer, pipeline

from qa_data import questions_from_file
from tests.conftest import HEADS, ROOT, read_json, train_heads

TYDIQA_SAMPLE = ROOT / "tests" / "fixtures" / "tydiqa-goldp-sample.json"
SCRIPTS = {"arabic": "ARABIC", "russian": "CYRILLIC", "korean": "HANGUL", "bengali": "BENGALI"}  # Unicode names
ENCODERS = ("bert", "xlmr")
RUNS = [(encoder, head) for encoder in ENCODERS for head in HEADS]


@pytest.fixture(scope="module")
def questions():
    return questions_from_file(TYDIQA_SAMPLE).rows


def tiny_xlmr(folder, texts):
    """A tiny random XLM-RoBERTa saved in `folder`, its sentencepiece vocabulary trained on `texts`."""
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(texts, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                unk_token="<unk>")
    # built by XLM-RoBERTa's own tokenizer class from the trained vocabulary: its pre-tokenizer and special tokens
    tokenizer = XLMRobertaTokenizer(vocab=[tuple(entry) for entry in json.loads(unigram.to_str())["model"]["vocab"]])
    tokenizer.save_pretrained(folder)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=37, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    XLMRobertaModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def encoders(tiny_bert_dir, questions, tmp_path_factory):
    texts = [*questions["context"], *questions["question"]]
    return {"bert": tiny_bert_dir, "xlmr": tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), texts)}


@pytest.fixture(scope="module")
def trained(encoders, tmp_path_factory):
    """{(encoder, head): model folder} of each encoder trained a few steps on the sample with each head and
    evaluated on it, with windows of 64 tokens: every context is cut into several windows."""
    folders = {run: tmp_path_factory.mktemp("-".join(run)) for run in RUNS}
    args = ["--train_file", TYDIQA_SAMPLE, "--validation_file", TYDIQA_SAMPLE, "--do_train", "--do_eval",
            "--max_steps", 3, "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 32,
            "--max_seq_length", 64, "--doc_stride", 16, "--learning_rate", 1e-3, "--save_strategy", "no",
            "--report_to", "none", "--seed", 42]
    for encoder in ENCODERS:
        train_heads({head: ["--model_name_or_path", encoders[encoder], *args, "--output_dir", folders[encoder, head]]
                     for head in HEADS})
    return folders


@pytest.fixture(scope="module")
def pipes(trained):
    """{(encoder, head): the pipeline of the saved model folder}, run on one thread: a tiny model runs faster on one
    thread than on threads waiting for a busy machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {run: pipeline("question-answering", model=str(folder), trust_remote_code=True)
           for run, folder in trained.items()}
    torch.set_num_threads(threads)


def dicts(questions):
    return [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_sample_covers_four_scripts_that_the_tokenizers_cut_into_pieces(questions, encoders, encoder):
    """Without this the answer checks below could pass on text a tokenizer turns into whole-word unknown tokens, or
    whose every token has characters of its own."""
    tokenizer = AutoTokenizer.from_pretrained(encoders[encoder])
    contexts = {qid.split("-")[0]: context for qid, context in zip(questions["id"], questions["context"])}
    assert sorted(contexts) == sorted(SCRIPTS)
    shared = 0
    for name, context in contexts.items():
        assert sum(unicodedata.name(char, "").startswith(SCRIPTS[name]) for char in context) > len(context) / 2, name
        encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
        assert tokens.count(tokenizer.unk_token) < len(tokens) / 10, name
        shared += len(encoded["offset_mapping"]) - len(set(encoded["offset_mapping"]))
    assert shared > 10  # jamo of one syllable, or "▁" and a word's first character


@pytest.mark.parametrize("encoder, head", RUNS)
def test_evaluation_scores_as_squad_v1_and_every_answer_is_the_context_at_its_offsets(trained, questions, encoder,
                                                                                       head):
    results = read_json(trained[encoder, head], "eval_results.json")
    assert {"eval_exact_match", "eval_f1"} <= set(results) and "eval_HasAns_exact" not in results
    predictions = read_json(trained[encoder, head], "eval_predictions.json")
    nbest = read_json(trained[encoder, head], "eval_nbest_predictions.json")
    assert set(predictions) == set(nbest) == set(questions["id"])
    for qid, context in zip(questions["id"], questions["context"]):
        assert predictions[qid] and predictions[qid] == nbest[qid][0]["text"], qid
        for answer in nbest[qid]:
            assert answer["text"] and answer["text"] == context[answer["start"] : answer["end"]], (qid, answer)


@pytest.mark.parametrize("align_to_words", [True, False])
@pytest.mark.parametrize("encoder, head", RUNS)
def test_the_pipeline_answers_with_the_contexts_text(pipes, questions, encoder, head, align_to_words):
    inputs = dicts(questions)
    results = pipes[encoder, head](inputs, top_k=5, align_to_words=align_to_words)
    assert len(results) == len(inputs)
    for qid, question, answers in zip(questions["id"], inputs, results):
        assert len(answers) == 5, qid
        for answer in answers:
            assert answer["answer"], (qid, answer)
            assert answer["answer"] == question["context"][answer["start"] : answer["end"]], (qid, answer)


@pytest.mark.parametrize("encoder, head", RUNS)
def test_the_pipelines_best_answer_is_evaluations(pipes, trained, questions, encoder, head):
    """The same span at the same offsets: the pipeline cuts windows and maps tokens to characters as evaluation did
    (spans whose scores are within float noise of the best may come in either order)."""
    nbest = read_json(trained[encoder, head], "eval_nbest_predictions.json")
    for qid, answer in zip(questions["id"], pipes[encoder, head](dicts(questions), align_to_words=False)):
        best = nbest[qid][0]["score"]
        assert (answer["start"], answer["end"]) in {(a["start"], a["end"]) for a in nbest[qid]
                                                    if best - a["score"] < 1e-4}, qid
