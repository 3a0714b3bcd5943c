"""The architecture matrix: both heads on every encoder family a user would pick for extractive QA in transformers
5.24, end to end.

Each family is a tiny random encoder (hidden size 32, two layers) with a tokenizer of the family's own class, its
vocabulary trained here on the sample data with the `tokenizers` library in the family's kind: WordPiece (BERT,
DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa, Longformer, ModernBERT) or sentencepiece Unigram (ALBERT,
DeBERTa-v2/v3, XLM-RoBERTa). They differ where the package could go wrong: token type ids or none (DistilBERT,
ALBERT, RoBERTa-likes, ModernBERT), [CLS]/[SEP] or <s>/</s>, offsets that include a word's leading space (ModernBERT's
byte-level tokens) or a "▁" of their own (Unigram), lowercasing normalizers, relative or rotary positions, a
projected embedding (ALBERT).

Every (family, head) trains a few steps on a few sample questions (64-token windows, so contexts take several), is
evaluated, saved, and then reloaded in ONE fresh process (all folders, to keep the suite's time) that cannot import
the project, so only the files saved in each folder serve it: every weight loads (for the CRF head also through
`AutoModelForQuestionAnswering`), every answer of evaluation and of the pipeline is its context's text at its
offsets, and the pipeline's best answer is evaluation's prediction.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, SentencePieceUnigramTokenizer, processors
from transformers import (
    AlbertConfig,
    AlbertTokenizer,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2Tokenizer,
    DistilBertConfig,
    DistilBertTokenizer,
    ElectraConfig,
    LongformerConfig,
    ModernBertConfig,
    MPNetConfig,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaTokenizer,
    XLMRobertaConfig,
    XLMRobertaTokenizer,
)

from qa_data import questions_from_file
from tests.conftest import HEADS, OUTSIDE_ENV, SCRIPT_ENV, TRAIN, read_json, run_script

# {family: why it cannot work}: families of the matrix kept out of it for a reason outside the package (none at
# present; every family below passes with both heads).
KNOWN_NOT_WORKING = {}

QUESTIONS = 10  # the first sample training questions: one context's eight (two unanswerable) and two of another's
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def wordpiece(texts, specials):
    """WordPiece vocabulary (lowercased, as BERT uncased's) trained on `texts`: the tokenizer class's `vocab`."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=500, special_tokens=specials)
    return {"vocab": trainer.get_vocab()}


def byte_bpe(texts, specials):
    """Byte-level BPE vocabulary and merges trained on `texts`: the tokenizer class's `vocab` and `merges`."""
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=500, special_tokens=specials)
    merges = json.loads(trainer.to_str())["model"]["merges"]
    return {"vocab": trainer.get_vocab(), "merges": [tuple(pair) for pair in merges]}


def unigram(texts, specials):
    """Sentencepiece Unigram vocabulary ((piece, score) pairs) trained on `texts`: the tokenizer class's `vocab`."""
    trainer = SentencePieceUnigramTokenizer()
    unknown = next(token for token in specials if "unk" in token.lower())
    trainer.train_from_iterator(texts, vocab_size=400, special_tokens=specials, unk_token=unknown)
    return {"vocab": [tuple(entry) for entry in json.loads(trainer.to_str())["model"]["vocab"]]}


def modernbert_tokenizer(texts):
    """ModernBERT's kind of tokenizer: a generic fast tokenizer (no class of its own) with a byte-level BPE
    vocabulary, BERT's special tokens put in by a template, and no token type ids. The template does not trim
    offsets, so a token that starts with a space starts at the space, as in ModernBERT's real tokenizer."""
    specials = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=500, special_tokens=specials)
    backend = trainer._tokenizer
    cls, sep = (backend.token_to_id(token) for token in specials[:2])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   mask_token="[MASK]", unk_token="[UNK]",
                                   model_input_names=["input_ids", "attention_mask"])


# {family: (its tokenizer class, the kind of vocabulary, the special tokens in the order the class expects: ALBERT's
# and XLM-R's unknown token ids are fixed)}; ModernBERT's is `modernbert_tokenizer`.
TOKENIZERS = {
    "bert": (BertTokenizer, wordpiece, BERT_SPECIALS),
    "distilbert": (DistilBertTokenizer, wordpiece, BERT_SPECIALS),
    "electra": (BertTokenizer, wordpiece, BERT_SPECIALS),
    "mpnet": (MPNetTokenizer, wordpiece, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]),
    "roberta": (RobertaTokenizer, byte_bpe, ROBERTA_SPECIALS),
    "longformer": (RobertaTokenizer, byte_bpe, ROBERTA_SPECIALS),
    "albert": (AlbertTokenizer, unigram, ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
    "deberta-v2": (DebertaV2Tokenizer, unigram, ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]),
    "xlm-roberta": (XLMRobertaTokenizer, unigram, ROBERTA_SPECIALS),
}


def tokenizer_of(family, texts):
    """A tokenizer of the family's own class with a vocabulary of the family's kind trained on `texts`."""
    if family == "modernbert":
        return modernbert_tokenizer(texts)
    tokenizer_class, vocabulary, specials = TOKENIZERS[family]
    return tokenizer_class(**vocabulary(texts, specials))


def config_of(family, tokenizer):
    """A tiny random config of the family, its special token ids the tokenizer's."""
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    # position ids of RoBERTa-likes start after the padding id
    roberta_like = {**ids, **SIZES, "max_position_embeddings": 130, "bos_token_id": tokenizer.cls_token_id,
                    "eos_token_id": tokenizer.sep_token_id}
    if family in ("bert", "electra", "albert"):  # ELECTRA's and ALBERT's embeddings projected to the hidden size
        config_class = {"bert": BertConfig, "electra": ElectraConfig, "albert": AlbertConfig}[family]
        return config_class(**ids, **SIZES, max_position_embeddings=128,
                            **({} if family == "bert" else {"embedding_size": 16}))
    if family == "distilbert":
        return DistilBertConfig(**ids, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=128)
    if family in ("roberta", "xlm-roberta", "mpnet"):
        return {"roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig, "mpnet": MPNetConfig}[family](**roberta_like)
    if family == "longformer":  # attending 16 tokens around each; its QA model finds the question by the separators
        return LongformerConfig(**roberta_like, attention_window=16, sep_token_id=tokenizer.sep_token_id)
    if family == "deberta-v2":  # as DeBERTa-v3: relative positions only, in log buckets, no token types
        return DebertaV2Config(**ids, **SIZES, max_position_embeddings=128, relative_attention=True,
                               position_buckets=16, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                               share_att_key=True, position_biased_input=False, type_vocab_size=0)
    # ModernBERT: rotary positions, every other layer attending only 16 tokens around each (windows are longer)
    return ModernBertConfig(**ids, **SIZES, local_attention=16, global_attn_every_n_layers=2,
                            cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)


FAMILIES = tuple(family for family in ("bert", "roberta", "distilbert", "albert", "electra", "deberta-v2",
                                       "xlm-roberta", "modernbert", "mpnet", "longformer")
                 if family not in KNOWN_NOT_WORKING)
# The families whose windows carry token type ids (the others' tokenizers make none)
WITH_TOKEN_TYPES = {"bert", "electra", "deberta-v2"}
TOKENIZER_KINDS = {"WordPiece": {"bert", "distilbert", "electra", "mpnet"},
                   "BPE": {"roberta", "longformer", "modernbert"},
                   "Unigram": {"albert", "deberta-v2", "xlm-roberta"}}
RUNS = [pytest.param(family, head, id=f"{family}-{head}") for family in FAMILIES for head in HEADS]


@pytest.fixture(scope="module")
def questions():
    return questions_from_file(TRAIN).rows.select(range(QUESTIONS))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """{family: folder of its tiny random encoder and tokenizer}, the vocabularies trained on the sample's texts."""
    sample = questions_from_file(TRAIN).rows
    texts = [*dict.fromkeys(sample["context"]), *sample["question"]]
    folders = {}
    for family in FAMILIES:
        folder = folders[family] = tmp_path_factory.mktemp(f"tiny-{family}")
        tokenizer = tokenizer_of(family, texts)
        tokenizer.save_pretrained(folder)
        AutoModel.from_config(config_of(family, tokenizer)).save_pretrained(folder)
    return folders


# Every run in one process, as run_qa.py / run_qa_crf.py would run it (imports cost more than a run); a run that
# fails leaves its traceback in its folder, so the others still run and the failure is reported as its own.
TRAIN_ALL = """
import json, sys, traceback
from qa_runner import main
from run_qa import SPAN_HEAD
from run_qa_crf import CRF_HEAD
heads = {head.name: head for head in (SPAN_HEAD, CRF_HEAD)}
for head, folder, argv in json.loads(sys.argv[1]):
    try:
        main(heads[head], argv)
    except BaseException:
        with open(f"{folder}/failed.txt", "w") as f:
            f.write(traceback.format_exc())
"""


@pytest.fixture(scope="module")
def trained(encoders, tmp_path_factory):
    """{(family, head): model folder} of each encoder trained a few steps with each head on the questions and
    evaluated on them (SQuAD v2), with 64-token windows: every context is cut into several."""
    args = ["--train_file", TRAIN, "--validation_file", TRAIN, "--version_2_with_negative",
            "--max_train_samples", QUESTIONS, "--max_eval_samples", QUESTIONS, "--do_train", "--do_eval",
            "--max_steps", 2, "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 64,
            "--max_seq_length", 64, "--doc_stride", 16, "--learning_rate", 1e-3, "--save_strategy", "no",
            "--report_to", "none", "--seed", 42, "--disable_tqdm", "true", "--log_level", "warning"]
    folders, runs = {}, []
    for param in RUNS:
        family, head = param.values
        folder = folders[family, head] = tmp_path_factory.mktemp(f"{family}-{head}")
        runs.append((head, str(folder), list(map(str, ["--model_name_or_path", encoders[family], *args,
                                                      "--output_dir", folder]))))
    result = run_script([sys.executable, "-c", TRAIN_ALL, json.dumps(runs)],
                        env={**SCRIPT_ENV, "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]})
    assert result.returncode == 0, result.stdout[-5000:]
    return folders


# The user's calls, in a process that cannot import the project: per folder, the pipeline's best answers (the
# empty one allowed, at evaluation's threshold, as evaluation predicts) and its top 3 answers aligned to words, and
# the model loaded again through the Auto class, with what loading reported and whether its weights and buffers are
# the pipeline model's (a parameter no initialisation covers would differ between two loads).
RELOAD = textwrap.dedent("""
    import importlib.util, json, sys, traceback
    assert importlib.util.find_spec("qa_pipeline") is None, "the project is importable"
    import torch
    from transformers import AutoModelForQuestionAnswering, pipeline

    torch.set_num_threads(1)
    folders, items = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    def tensors(model):
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def reloaded(folder):
        qa = pipeline("question-answering", model=folder, trust_remote_code=True)
        model, info = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True,
                                                                    output_loading_info=True)
        mine, theirs = tensors(model), tensors(qa.model)
        return {"pipeline": type(qa).__module__, "model": type(model).__module__, "class": type(model).__name__,
                "loading": {key: sorted(map(str, value)) for key, value in info.items()},
                "same_tensors": mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine),
                "best": qa(items, handle_impossible_answer=True, align_to_words=False, null_score_diff_threshold=0.0),
                "aligned": qa(items, top_k=3)}

    answers = {}
    for name, folder in folders.items():
        try:
            answers[name] = reloaded(folder)
        except Exception:
            answers[name] = {"error": traceback.format_exc()}
    print(json.dumps(answers))
""")


@pytest.fixture(scope="module")
def reloaded(trained, questions, tmp_path_factory):
    """{(family, head): what the fresh process reported for the folder} (absent for runs that did not train)."""
    folders = {"/".join(run): str(folder) for run, folder in trained.items() if not (folder / "failed.txt").exists()}
    items = [{"question": q, "context": c} for q, c in zip(questions["question"], questions["context"])]
    cwd = tmp_path_factory.mktemp("elsewhere")
    result = run_script([sys.executable, "-c", RELOAD, json.dumps(folders), json.dumps(items)], cwd=cwd,
                        env=OUTSIDE_ENV, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr[-5000:]
    return {tuple(name.split("/")): answers for name, answers in json.loads(result.stdout.splitlines()[-1]).items()}


def trained_folder(trained, family, head):
    """The run's folder, or the failure of its run (with the traceback its run left)."""
    failure = trained[family, head] / "failed.txt"
    assert not failure.exists(), failure.read_text()[-5000:]
    return trained[family, head]


def reload_of(reloaded, family, head):
    answers = reloaded[family, head]
    assert "error" not in answers, answers["error"][-5000:]
    return answers


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_has_its_own_tokenizer_of_its_kind(encoders, family):
    """Without this the matrix could pass on tokenizers that are all alike: each is the family's class (as
    AutoTokenizer reloads it), of the family's kind, and makes token type ids only where the family uses them."""
    tokenizer = AutoTokenizer.from_pretrained(encoders[family])
    kind = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]
    assert family in TOKENIZER_KINDS[kind]
    assert type(tokenizer) is TOKENIZERS.get(family, (PreTrainedTokenizerFast,))[0]
    assert ("token_type_ids" in tokenizer("Who?", "Bob.")) == (family in WITH_TOKEN_TYPES)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Skerry Point lighthouse")["input_ids"])
    assert tokenizer.unk_token not in tokens and len(tokens) > 5  # words cut into pieces, none unknown


@pytest.mark.parametrize("family, head", RUNS)
def test_trains_evaluates_and_saves_a_folder_that_brings_its_code(trained, family, head):
    folder = trained_folder(trained, family, head)
    assert math.isfinite(read_json(folder, "train_results.json")["train_loss"])
    assert {"eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_exact"} <= set(read_json(folder,
                                                                                           "eval_results.json"))
    config = read_json(folder, "config.json")
    assert config["qa_settings"]["head"] == head
    code = {"qa_pipeline.py", "qa_windows.py", "qa_decoding.py", "span_decoding.py"}
    if head == "crf":
        assert config["model_type"] == "crf_qa" and config["encoder"]["model_type"] == family
        code |= {"modeling_crf.py", "crf_decoding.py"}
    else:
        assert config["model_type"] == family
    assert code <= set(os.listdir(folder))


@pytest.mark.parametrize("family, head", RUNS)
def test_every_evaluation_answer_is_the_context_at_its_offsets(trained, questions, family, head):
    folder = trained_folder(trained, family, head)
    predictions = read_json(folder, "eval_predictions.json")
    nbest = read_json(folder, "eval_nbest_predictions.json")
    assert set(predictions) == set(nbest) == set(questions["id"])
    for qid, context in zip(questions["id"], questions["context"]):
        assert predictions[qid] == nbest[qid][0]["text"], qid  # the best answer, "" when the null score wins
        spans = [answer for answer in nbest[qid] if answer["text"]]
        assert len(spans) >= 3, qid
        for answer in spans:
            assert answer["text"] == context[answer["start"] : answer["end"]], (qid, answer)


@pytest.mark.parametrize("family, head", RUNS)
def test_the_folder_reloads_from_its_own_files_only(trained, reloaded, family, head):
    trained_folder(trained, family, head)
    answers = reload_of(reloaded, family, head)
    assert answers["pipeline"].startswith("transformers_modules.")  # the folder's copy of qa_pipeline.py
    if head == "crf":
        assert answers["model"].startswith("transformers_modules.") and answers["class"] == "CrfForQuestionAnswering"
    else:
        assert answers["model"].startswith(f"transformers.models.{family.replace('-', '_')}.")
    assert not any(answers["loading"].values()), answers["loading"]  # no key missing, unexpected or mismatched
    assert answers["same_tensors"]


def cuts_a_word(context, start, end):
    """Whether the span [start, end) of `context` begins or ends inside a run of letters or of digits, which every
    family's pre-tokenizer keeps in one word (byte-level BPE splits letters from digits, the others split less)."""
    def inside(i):
        return 0 < i < len(context) and any(kind(context[i - 1]) and kind(context[i])
                                             for kind in (str.isalpha, str.isdigit))
    return inside(start) or inside(end)


@pytest.mark.parametrize("family, head", RUNS)
def test_the_pipelines_answers_are_the_context_at_their_offsets(trained, reloaded, questions, family, head):
    """The best answers at token offsets, and the top 3 aligned to the tokenizer's words (the default), which never
    cut a word."""
    trained_folder(trained, family, head)
    answers = reload_of(reloaded, family, head)
    for qid, context, best, aligned in zip(questions["id"], questions["context"], answers["best"],
                                           answers["aligned"]):
        assert best["answer"] == context[best["start"] : best["end"]], (qid, best)
        assert len(aligned) == 3, qid
        for answer in aligned:
            assert answer["answer"] and answer["answer"] == context[answer["start"] : answer["end"]], (qid, answer)
            assert not cuts_a_word(context, answer["start"], answer["end"]), (qid, answer)


@pytest.mark.parametrize("family, head", RUNS)
def test_the_pipelines_best_answer_is_evaluations_prediction(trained, reloaded, questions, family, head):
    """The same answer at the same offsets ("" when evaluation predicted no answer): the pipeline cuts windows, runs
    the reloaded model and decodes as evaluation did. Answers whose scores are within float noise of the best (the
    pipeline runs windows one by one, evaluation in padded batches) may come in either order."""
    folder = trained_folder(trained, family, head)
    predictions = read_json(folder, "eval_predictions.json")
    nbest = read_json(folder, "eval_nbest_predictions.json")
    answers = reload_of(reloaded, family, head)
    for qid, answer in zip(questions["id"], answers["best"]):
        best = nbest[qid][0]["score"]
        tied = {(a["text"], a["start"], a["end"]) for a in nbest[qid] if best - a["score"] < 1e-4}
        assert (answer["answer"], answer["start"], answer["end"]) in tied, (qid, answer, predictions[qid])
