"""Extractive question answering as a `transformers` pipeline, for the models spanbert-qa trains.

transformers 5.3 removed the "question-answering" task; a model folder brings it back by carrying this file (with
the modules it imports) and naming it in `config.custom_pipelines`:

    from transformers import pipeline
    qa = pipeline("question-answering", model="path/or/hub-id", trust_remote_code=True)
    qa(question="Who?", context="...")  # {"score": ..., "start": ..., "end": ..., "answer": ...}
    qa(question="Who?", passages=["...", {"text": "...", "id": "doc-7"}])  # the answer across them, its passage named

Windows and their features come from the function evaluation uses (`qa_windows.window_features`), and each window's
candidates and null score from the decoding evaluation uses (`qa_decoding.window_candidates`), with the settings
evaluation ran with (`qa_settings.QASettings`, read from the model's config and checked when the pipeline is built),
so the pipeline answers as evaluation did. A span model's answers are reported with transformers 4's
scores; a CRF model's with their tag paths' probabilities; a multi-span CRF model's answers list their `spans`. A
model whose config stores a calibrator (`run_qa.py --calibrate`) adds each answer's `probability` of being right
(`calibration.py`). A question over many passages is answered as evaluation answers a context of several windows,
each passage cut into windows of its own (`qa_passages.py`).
"""

import contextlib
import itertools
import math
import operator
import warnings
from collections.abc import Iterable, Mapping
from numbers import Integral, Real

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline

from .calibration import Calibrator  # noqa: F401  (these two named here because transformers 4 copies only the
from .span_decoding import best_spans  # noqa: F401  pipeline's own imports into the modules it loads)
from .qa_decoding import OUTPUT_FIELDS, multi_span_answers, window_candidates
from .qa_passages import Collection, checked_text
from .qa_settings import QASettings
from .qa_windows import WindowCollator, max_question_tokens, window_features

# What the pipeline keeps of a window beside the model's inputs, for its postprocessing.
EXTRAS = ("offsets", "words", "cls_index", "context", "is_last", "passages")
# What an answer holds, as transformers 4's pipeline returns it (and `probability` for a calibrated model).
ANSWER_FIELDS = ("score", "start", "end", "answer")
# The call's parameters (transformers 4's, `topk` its deprecated spelling of `top_k`, and this pipeline's
# `null_score_diff_threshold`); `padding` values as transformers 4 took them.
PARAMETERS = ("top_k", "doc_stride", "max_seq_len", "max_question_len", "max_answer_len", "handle_impossible_answer",
              "align_to_words", "null_score_diff_threshold", "bf16", "batch_size", "num_workers", "padding", "topk")
PADDINGS = (None, True, False, "longest", "max_length", "do_not_pad")
# Questions whose windows a batched call sorts by length together (evaluation sorts all of them).
SORTED_QUESTIONS = 1024


def paired(questions, contexts):
    """question=..., context=... as one {"question", "context"} dict (two strings) or a list of them; a single
    string beside a list is asked about / searched for every item of the list."""
    for name, value in (("question", questions), ("context", contexts)):
        if not isinstance(value, (str, list, tuple)):
            raise ValueError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    if isinstance(questions, str) and isinstance(contexts, str):
        return {"question": questions, "context": contexts}
    questions = [questions] * len(contexts) if isinstance(questions, str) else list(questions)
    contexts = [contexts] * len(questions) if isinstance(contexts, str) else list(contexts)
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts: give one context per question")
    return [{"question": q, "context": c} for q, c in zip(questions, contexts)]


def over_passages(questions, passages):
    """question=..., passages=... as one {"question", "passages"} dict (a question and its list of passages) or a list
    of them (a list of questions and a list of passage lists, one per question)."""
    if isinstance(questions, str):
        return {"question": questions, "passages": passages}
    if not isinstance(questions, (list, tuple)) or not isinstance(passages, (list, tuple)):
        raise ValueError("question=... and passages=...: give a question and its list of passages, or a list of "
                         "questions and a list of passage lists, one per question")
    if len(questions) != len(passages):
        raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists: give one list per question")
    return [{"question": q, "passages": p} for q, p in zip(questions, passages)]


def checked(item, where):
    """`item` as the pipeline's input: {"question", "context"}, or {"question", "passages": `Collection`} for a
    question over many passages (`qa_passages.py`); other keys, such as a dataset row's, are ignored.

    As transformers 4's pipeline: KeyError for a dict without one of the keys, ValueError for a text that is None,
    empty or not a string; ValueError too for a text that is no Unicode (an unpaired surrogate).
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a {{'question': ..., 'context': ...}} dict, got {item!r:.100}")
    source = "passages" if "passages" in item and "context" not in item else "context"
    for name in ("question", source):
        if name not in item:
            raise KeyError(f"{where}: the dict has no '{name}' key; give {{'question': ..., 'context': ...}} (or "
                           f"{{'question': ..., 'passages': [...]}})")
    question = checked_text(item["question"], f"{where}: 'question'")
    if source == "passages":
        return {"question": question, "passages": Collection.of(item["passages"], f"{where}: 'passages'")}
    return {"question": question, "context": checked_text(item["context"], f"{where}: 'context'")}


def pipeline_inputs(args, kwargs):
    """The call's input: one {"question", "context"} dict, a list of them, or a generator of them (streamed).

    Accepts what transformers 4's pipeline accepted: question=..., context=... (strings or lists), (question,
    context) positionally, a dict, a list or tuple of dicts, X=... or data=..., and any other iterable of dicts (a
    generator, a `datasets.Dataset`), which is streamed: the call returns an iterator of results, checked and
    answered as they are read. A question over many passages is a {"question", "passages"} dict in any of these
    forms, or question=..., passages=[...].
    """
    keyword = [name for name in ("X", "data") if name in kwargs]
    if args and (keyword or {"question", "context", "passages"} & set(kwargs)):
        raise ValueError("Give the input either positionally or as question=... and context=..., not both")
    if len(args) == 2:
        inputs = paired(*args)
    elif len(args) == 1:
        inputs = args[0]
    elif args:
        raise ValueError(f"Expected (question, context) or one input, got {len(args)} positional arguments")
    elif keyword:
        inputs = kwargs.pop(keyword[0])
    elif "question" in kwargs and "context" in kwargs:
        inputs = paired(kwargs.pop("question"), kwargs.pop("context"))
    elif "question" in kwargs and "passages" in kwargs:
        inputs = over_passages(kwargs.pop("question"), kwargs.pop("passages"))
    else:
        raise ValueError("Give question=... and context=... (strings or lists), question=... and passages=[...], or "
                         "{'question', 'context'} or {'question', 'passages'} dicts")
    if isinstance(inputs, Mapping):
        return checked(inputs, "input")
    if isinstance(inputs, (list, tuple)):
        return [checked(item, f"input {i}") for i, item in enumerate(inputs)]
    if isinstance(inputs, str) or not isinstance(inputs, Iterable):
        raise ValueError(f"Expected a {{'question', 'context'}} dict, a list or an iterable of them, got "
                         f"{type(inputs).__name__}")
    return (checked(item, f"input {i}") for i, item in enumerate(inputs))


def given(**params):
    """The parameters that were passed (not None): at call time they override only what they name, so parameters
    given when the pipeline was built stay in force."""
    return {name: value for name, value in params.items() if value is not None}


def check_counts(minimum, **params):
    """Refuse a given parameter that is not an integer of at least `minimum` (a bool is not a count)."""
    for name, value in params.items():
        if value is not None and (not isinstance(value, Integral) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_flags(**params):
    """Refuse a given parameter that is not True or False."""
    for name, value in params.items():
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")


def cpu_has_bf16():
    """Whether this machine's CPU has bf16 instructions (avx512_bf16 or amx_bf16), as Linux reports its flags; None
    where it does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def check_numbers(**params):
    """Refuse a given parameter that is not a finite real number (a bool is not a number)."""
    for name, value in params.items():
        if value is not None and (not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def context_words(tokenizer, contexts):
    """Per context, the (words, 2) character spans of the tokenizer's words in it, in order: each context tokenized
    alone (all in one call), so that a word that a window boundary cuts is still whole."""
    encoded = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)
    words = []
    for c in range(len(contexts)):
        ids = np.array([-1 if i is None else i for i in encoded.word_ids(c)], dtype=np.int64)
        offsets = np.array(encoded["offset_mapping"][c], dtype=np.int64).reshape(-1, 2)[ids >= 0]
        ids = ids[ids >= 0]
        count = ids.max(initial=-1) + 1
        spans = np.stack([np.full(count, np.iinfo(np.int64).max), np.full(count, -1)], axis=1)
        np.minimum.at(spans[:, 0], ids, offsets[:, 0])
        np.maximum.at(spans[:, 1], ids, offsets[:, 1])
        spans = spans[spans[:, 1] >= 0]
        words.append(spans[np.argsort(spans[:, 0], kind="stable")])
    return words


def word_spans(words, offsets):
    """(length, 2) character span of the word holding each of a window's context tokens, -1 off the context.

    words: `context_words` of the context; offsets: the window's (length, 2) context offsets, -1 off it.
    """
    spans = np.full_like(offsets, -1)
    context = offsets[:, 0] >= 0
    spans[context] = words[np.searchsorted(words[:, 0], offsets[context, 0], side="right") - 1]
    return spans


def log_softmax(logits, mask):
    """Row-wise log-softmax of `logits` over the tokens where `mask` is True (-inf elsewhere), in float64."""
    masked = np.where(mask, logits.astype(np.float64), -np.inf)
    top = masked.max(axis=1, keepdims=True)
    return masked - top - np.log(np.exp(masked - top).sum(axis=1, keepdims=True))


def library_scores(start_logits, end_logits, context, cls_index, candidates, shared=False):
    """transformers 4's scores: each span's probability within its window (softmax of the window's start logits
    times softmax of its end logits, both over its context tokens and [CLS]), and each window's no-answer
    probability (the same at [CLS]).

    With `shared`, the softmaxes run over all the windows' tokens together (a question over many passages): one
    distribution over the whole collection, so that scores compare across windows and passages (the probability
    that shared-normalisation training maximises for the right span).
    """
    rows = np.arange(len(cls_index))
    mask = context.copy()
    mask[rows, cls_index] = True
    shape = (1, -1) if shared else start_logits.shape
    log_start, log_end = (log_softmax(logits.reshape(shape), mask.reshape(shape)).reshape(mask.shape)
                          for logits in (start_logits, end_logits))
    span = log_start[candidates.window, candidates.start] + log_end[candidates.window, candidates.end]
    return np.exp(span), np.exp(log_start[rows, cls_index] + log_end[rows, cls_index])


def distinct_answers(context, candidates, score, char_start, char_end, combine, passage):
    """Answers best first (by the candidates' scores, as evaluation ranks them: equal scores in window order, then
    as the window ranked them), merged as transformers 4 merges them: spans of one passage whose texts are equal
    (ignoring case) are one answer, at the best one's place, with their `score`s combined by `combine`
    (transformers 4 adds them). `passage`: each candidate's passage (all 0 for a single context); the same text in
    two passages is two answers, each naming its passage.

    Returns dicts {"answer", "start", "end", "rank", "score"}; "rank" is the ranking score.
    """
    answers = {}
    for i in np.argsort(-candidates.score, kind="stable").tolist():
        start, end = char_start[i], char_end[i]
        text = context[start:end]
        key = (passage[i], text.lower())
        merged = answers.get(key)
        if merged:
            merged["score"] = combine(merged["score"], score[i])
        else:
            answers[key] = {"answer": text, "start": start, "end": end, "rank": float(candidates.score[i]),
                            "score": score[i]}
    return list(answers.values())


def with_no_answer(answers, null_rank, empty, threshold):
    """`answers` with the `empty` answer at its place: evaluation answers "" when null score - best span score >
    threshold, so the empty answer ranks as its null score (`null_rank`) lowered by the threshold (a tie goes to the
    span)."""
    place = sum(answer["rank"] >= null_rank - threshold for answer in answers)
    return [*answers[:place], {"answer": "", "start": 0, "end": 0, **empty}, *answers[place:]]


def with_probabilities(answers, null_rank, calibrator):
    """(`answers` each with its calibrated `probability`, the empty answer's probability)."""
    spans, empty = calibrator.answer_probabilities([a["answer"] for a in answers], [a["rank"] for a in answers],
                                                   null_rank)
    return [{**answer, "probability": p} for answer, p in zip(answers, spans)], empty


def multi_span_result(answer):
    """The pipeline's dict of a multi-span answer (from `qa_decoding.multi_span_answers`): the fields single-span users
    read (`answer`: the spans joined, `score`: P(path), `start`/`end` of the first span; 0 without spans) and `spans`,
    each `{"answer", "start", "end", "score"}` (P(it is a whole span)), in context order."""
    spans = [{"answer": s["text"], "start": s["start"], "end": s["end"], "score": math.exp(s["score"])}
             for s in answer["spans"]]
    first = spans[0] if spans else {"start": 0, "end": 0}
    return {"score": math.exp(answer["score"]), "start": first["start"], "end": first["end"], "answer": answer["text"],
            "spans": spans}


def multi_span_results(best, ranked, null, top_k, with_null, threshold):
    """`top_k` distinct answers of a multi-span model: its answer `best` (the spans of every window that answers, as
    evaluation's), then its other most probable paths `ranked` whose text differs from every answer before it
    (ignoring case: paths of other windows, or other cuts of the same words, can read alike); with `with_null`, the
    empty answer (score: the `null` log-probability) first where no window answers, else among the paths at its rank
    lowered by the threshold, as for a span model."""
    seen, paths = {best["text"].lower()}, []
    for answer in ranked:
        if answer["spans"] and answer["text"].lower() not in seen:
            seen.add(answer["text"].lower())
            paths.append(answer)
    if with_null:
        empty = {"text": "", "spans": [], "score": null}
        if best["spans"]:
            paths.insert(sum(a["score"] >= null - threshold for a in paths), empty)
        else:
            best = empty
    return [multi_span_result(a) for a in [best, *paths][:top_k]]


def compile_encoder(model):
    """Compiles `model`'s encoder (its `base_model`) in place with torch.compile; `frozen_weights` is then the
    context to call it in. The first batches of each shape pay the compilation (tens of seconds; shapes turn
    dynamic from the second); the heads stay eager (the CRF's decoding branches on its data)."""
    model.base_model.compile()


def frozen_weights():
    """The context in which a compiled encoder compiles for inference: its weights frozen into the compiled code as
    constants (inductor's `freezing`: on CPU the matrix products then run on weights laid out for them once), set
    around the calls rather than for the whole process (a setting of torch's compiler, which other models share)."""
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def stacked(rows, fill, dtype):
    """(windows, longest window, ...) array of a question's per-window arrays, `fill` past each one's end."""
    array = np.full((len(rows), max(len(r) for r in rows), *rows[0].shape[1:]), fill, dtype=dtype)
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return array


class QuestionAnsweringPipeline(ChunkPipeline):
    """Answers questions about contexts with a spanbert-qa model (span or CRF head).

    Call parameters: `top_k` (answers per question, default 1), `doc_stride`, `max_seq_len`, `max_question_len`,
    `max_answer_len`, `handle_impossible_answer` (allow "" as the answer, decided with the no-answer threshold
    the model's config holds, or `null_score_diff_threshold` if given), `align_to_words` (default True), `bf16`
    (the encoder under bf16 autocast) and `batch_size` (windows per forward pass). Defaults come from the settings
    the model was evaluated with; parameters given when the pipeline is built hold for every call, and a call
    overrides only those it names. `torch_compile=True`, given when the pipeline is built, compiles the model's
    encoder (`compile_encoder`).
    """

    def __init__(self, *args, torch_compile=False, **kwargs):
        super().__init__(*args, **kwargs)
        # Read and checked once, as the pipeline is built: a config that cannot serve fails here, naming its key.
        self.settings = QASettings.from_config(self.model.config)
        check_flags(torch_compile=torch_compile)
        self.compiled = bool(torch_compile)
        if self.compiled:
            compile_encoder(self.model)

    def __call__(self, *args, **kwargs):
        check_counts(1, batch_size=kwargs.get("batch_size", self._batch_size))
        check_counts(0, num_workers=kwargs.get("num_workers", self._num_workers))
        inputs = pipeline_inputs(args, kwargs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """Unbatched calls run as transformers runs them; batched ones through `length_sorted_answers`."""
        if batch_size <= 1:
            return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        return self.length_sorted_answers(iter(inputs), batch_size, preprocess_params, forward_params,
                                          postprocess_params)

    def length_sorted_answers(self, inputs, batch_size, preprocess_params, forward_params, postprocess_params):
        """Answers in input order (`length_sorted_outputs`)."""
        for question_windows in self.length_sorted_outputs(inputs, batch_size, preprocess_params, forward_params):
            yield self.postprocess(question_windows, **postprocess_params)

    def length_sorted_outputs(self, inputs, batch_size, preprocess_params, forward_params):
        """Per input (checked: `checked`'s dicts), in order, its windows with the model's outputs, as `postprocess`
        reads them: the windows of `SORTED_QUESTIONS` inputs at a time run through the model in batches of windows of
        similar length, as evaluation batches them, so that batches carry little padding (a question over passages
        shares batches with every other window)."""
        collate = WindowCollator(self.tokenizer.pad_token_id)
        while chunk := list(itertools.islice(inputs, SORTED_QUESTIONS)):
            windows = [(q, w) for q, item_windows in enumerate(self.question_windows(chunk, **preprocess_params))
                       for w in item_windows]
            # longest first, as evaluation runs them: the widest batch's memory is reused by every narrower one
            # (shortest first, each batch needs more than the ones before freed; bench/README.md, evaluation memory)
            order = sorted(range(len(windows)), key=lambda i: -len(windows[i][1]["offsets"]))
            outputs = [None] * len(windows)
            for first in range(0, len(order), batch_size):
                rows = order[first : first + batch_size]
                batch = collate([{k: v[0] for k, v in windows[i][1].items() if k not in EXTRAS} for i in rows])
                batch.update({k: [windows[i][1][k] for i in rows] for k in EXTRAS})
                batch = self.forward(batch, **forward_params)
                for k, i in enumerate(rows):  # one window's outputs, with the batch axis as the pipeline keeps it
                    outputs[i] = {key: value[k : k + 1] if isinstance(value, torch.Tensor) else value[k]
                                  for key, value in batch.items()}
            by_question = [[] for _ in chunk]
            for (q, _), output in zip(windows, outputs):
                by_question[q].append(output)
            yield from by_question

    def _sanitize_parameters(self, top_k=None, doc_stride=None, max_seq_len=None, max_question_len=None,
                             max_answer_len=None, handle_impossible_answer=None, align_to_words=None,
                             null_score_diff_threshold=None, bf16=None, topk=None, padding=None, **unknown):
        if "torch_compile" in unknown:
            raise ValueError("torch_compile is given when the pipeline is built: "
                             "pipeline('question-answering', ..., torch_compile=True)")
        if unknown:
            raise ValueError(f"Unknown parameter(s) of the question-answering pipeline: {', '.join(sorted(unknown))}"
                             f" (its parameters: {', '.join(PARAMETERS)})")
        if topk is not None:  # as transformers 4 took it
            warnings.warn("The pipeline's `topk` is deprecated: use `top_k`", FutureWarning, stacklevel=3)
            top_k = topk if top_k is None else top_k
        if padding not in PADDINGS:  # windows are padded per batch whatever is asked: no answer depends on it
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        # Only what was passed: transformers merges these over the parameters given when the pipeline was built.
        check_counts(1, top_k=top_k, max_seq_len=max_seq_len, max_question_len=max_question_len,
                     max_answer_len=max_answer_len)
        check_counts(0, doc_stride=doc_stride)
        check_flags(handle_impossible_answer=handle_impossible_answer, align_to_words=align_to_words, bf16=bf16)
        if bf16 and self.device.type == "cpu" and cpu_has_bf16() is False:
            warnings.warn("bf16=True on a CPU without bf16 instructions (avx512_bf16, amx_bf16): torch emulates them, "
                          "slower than float32, which this pipeline uses unless asked", stacklevel=3)
        check_numbers(null_score_diff_threshold=null_score_diff_threshold)
        # align_to_words also goes to preprocessing: the words of a context are read only if answers align to them
        preprocess = given(max_seq_len=max_seq_len, doc_stride=doc_stride, max_question_len=max_question_len,
                           align_to_words=align_to_words)
        postprocess = given(top_k=top_k, max_answer_len=max_answer_len, align_to_words=align_to_words,
                            handle_impossible_answer=handle_impossible_answer, null_threshold=null_score_diff_threshold)
        # top_k and max_answer_len also go to the forward pass: a CRF model decodes there, that many spans per window
        # if evaluation's n-best holds fewer, each at most max_answer_len tokens long
        return preprocess, given(top_k=top_k, max_answer_len=max_answer_len, bf16=bf16), postprocess

    def window_sizes(self, max_seq_len, doc_stride):
        """(max_seq_len, doc_stride): the given ones, else evaluation's.

        Windows only advance if the stride is under half a window (the rule run_qa.py applies): a given stride
        that breaks it is refused, evaluation's stride is shrunk to a quarter of a shorter window.
        """
        settings = self.settings
        max_seq_len = settings.max_seq_length if max_seq_len is None else max_seq_len
        longest = self.tokenizer.model_max_length
        if max_seq_len > longest:
            raise ValueError(f"max_seq_len {max_seq_len} is longer than the model's {longest} tokens")
        if doc_stride is None:
            doc_stride = settings.doc_stride if settings.doc_stride < max_seq_len // 2 else max_seq_len // 4
        if doc_stride >= max_seq_len // 2:
            raise ValueError(f"doc_stride {doc_stride} must be less than half of max_seq_len {max_seq_len}")
        if max_question_tokens(self.tokenizer, max_seq_len, doc_stride) < 1:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a question beside doc_stride {doc_stride}")
        return max_seq_len, doc_stride

    @property
    def head(self):
        """The model's decoding ("span", "crf" or "multi_span")."""
        return self.settings.decoder

    def preprocess(self, inputs, max_seq_len=None, doc_stride=None, max_question_len=None, align_to_words=True):
        yield from self.question_windows([inputs], max_seq_len, doc_stride, max_question_len, align_to_words)[0]

    def question_windows(self, items, max_seq_len=None, doc_stride=None, max_question_len=None, align_to_words=True):
        """Per item ({"question", "context"} or {"question", "passages"}), its windows as the model is fed them: the
        model inputs (a batch of one), the context mask, and for postprocessing the offsets, word spans (with
        `align_to_words`; else the offsets again), [CLS] position, context, passages and whether it is the last. An
        item over passages has the windows of each of its passages, in order, with offsets into the passages' joined
        text (`qa_passages.Collection`). The items' contexts and passages are tokenized together, in one call of the
        tokenizer (and once more alone for their words)."""
        max_seq_len, doc_stride = self.window_sizes(max_seq_len, doc_stride)
        # (item, character shift into the item's context) of each text to cut into windows
        texts, owners = [], []
        for i, item in enumerate(items):
            collection = item.get("passages")
            for text, shift in (zip(collection.texts, collection.starts.tolist()) if collection else
                                [(item["context"], 0)]):
                texts.append(text)
                owners.append((i, shift))
        features = window_features([items[i]["question"] for i, _ in owners], texts, ["input"] * len(texts),
                                   self.tokenizer, max_seq_len, doc_stride, max_question_len=max_question_len)
        text_windows = [[] for _ in texts]
        for w, t in enumerate(features["window_question"]):
            text_windows[t].append(w)
        result = [[] for _ in items]
        words_of = context_words(self.tokenizer, texts) if align_to_words else [None] * len(texts)
        for text, words, windows, (i, shift) in zip(texts, words_of, text_windows, owners):
            if not any(any(features["context_mask"][w]) for w in windows):
                # e.g. only control or zero-width characters, which the tokenizer drops: nothing to answer from
                raise ValueError(f"The {'passage' if items[i].get('passages') else 'context'} {text!r:.100} "
                                 f"has no text the tokenizer keeps")
            result[i].extend(self.window(features, w, words, shift, items[i]) for w in windows)
        for windows in result:
            windows[-1]["is_last"] = True
        return result

    def window(self, features, w, words, shift, item):
        """Window `w` of `features` as the pipeline feeds it to the model and keeps it for postprocessing, its
        character offsets (and its words' spans in its context's `words`; None: its offsets) moved by `shift` into
        its `item`'s context (or its passages' joined text)."""
        window = {name: torch.tensor([features[name][w]]) for name in self.tokenizer.model_input_names
                  if name in features}
        window["context_mask"] = torch.tensor([features["context_mask"][w]])
        offsets = features["offsets"][w]
        spans = offsets if words is None else word_spans(words, offsets)
        if shift:
            offsets, spans = (np.where(a >= 0, a + shift, a) for a in (offsets, spans))
        collection = item.get("passages")
        return {**window, "offsets": offsets, "words": spans, "cls_index": features["cls_index"][w],
                "context": collection.joined if collection else item["context"], "is_last": False,
                "passages": collection}

    def _forward(self, inputs, top_k=1, max_answer_len=None, bf16=False):
        model_inputs = {k: v for k, v in inputs.items() if k not in EXTRAS}
        head = self.head
        max_answer_len = max_answer_len or self.settings.max_answer_length
        # A window has at most this many answers of one span, as the span head finds: more paths than that are not
        # asked of the CRF's search, whatever top_k says (its work and memory grow with the paths asked)
        spans = int(model_inputs["context_mask"].sum(dim=1).max())
        most_paths = max(spans * min(spans, max_answer_len), 1)
        if head == "multi_span":  # an answer needs each window's best path; top_k more answers one more path
            model_inputs["n_best_size"] = min(top_k + 1, most_paths)
        elif head == "crf":  # the n-best paths per window: as many as evaluation's n-best lists hold, or top_k if more
            model_inputs["n_best_size"] = min(max(self.settings.n_best_size, top_k), most_paths)
            model_inputs["max_answer_length"] = max_answer_len
        else:
            model_inputs.pop("context_mask")
        # the encoder under bf16 autocast when asked; the CRF's recursions and decoding turn it off (float32/64)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16), \
                frozen_weights() if self.compiled else contextlib.nullcontext():
            outputs = self.model(**model_inputs)
        floats = {f: outputs[f].float() if outputs[f].is_floating_point() else outputs[f] for f in OUTPUT_FIELDS[head]}
        return {**{k: inputs[k] for k in EXTRAS}, **floats}

    def postprocess(self, windows, top_k=1, max_answer_len=None, handle_impossible_answer=False, null_threshold=None,
                    align_to_words=True):
        settings = self.settings
        max_answer_len = settings.max_answer_length if max_answer_len is None else max_answer_len
        null_threshold = settings.null_score_diff_threshold if null_threshold is None else null_threshold
        collection = windows[0]["passages"]
        if self.head == "multi_span":
            results = self.multi_span_results(windows, top_k, handle_impossible_answer, null_threshold, align_to_words)
            if collection:
                results = [{**collection.located(r), "spans": [collection.located(s) for s in r["spans"]]}
                           for r in results]
            return results[0] if top_k == 1 else results
        calibrator = settings.calibrator
        # A calibrated top answer's evidence includes its margin over the runner-up: find two distinct answers.
        needed = max(top_k, 2) if calibrator else top_k
        answers, null_rank, null_score = self.ranked_spans(windows, needed, max_answer_len, align_to_words)
        empty = {"score": null_score}
        if calibrator:
            answers, empty["probability"] = with_probabilities(answers, null_rank, calibrator)
        if handle_impossible_answer:
            answers = with_no_answer(answers, null_rank, empty, null_threshold)
        fields = ANSWER_FIELDS + (("probability",) if calibrator else ())
        results = [{field: answer[field] for field in fields} for answer in answers[:top_k]]
        if collection:
            results = [collection.located(result) for result in results]
        return results[0] if top_k == 1 else results

    def decoding_inputs(self, windows, align_to_words):
        """(the head's outputs, offsets, [CLS] positions, answer bounds) of a question's windows as arrays, one row
        per window; the bounds are the word spans (`align_to_words`) or the token offsets."""
        def spans(key):  # (length, 2) per window: batching adds a leading axis to arrays
            return [np.asarray(w[key]).reshape(-1, 2) for w in windows]

        offsets = spans("offsets")
        outputs = self.window_outputs(windows, [len(o) for o in offsets])
        offsets = stacked(offsets, -1, np.int64)
        bounds = stacked(spans("words"), -1, np.int64) if align_to_words else offsets
        cls_index = np.array([w["cls_index"] for w in windows])
        return outputs, offsets, cls_index, bounds

    def multi_span_results(self, windows, top_k, handle_impossible_answer, null_threshold, align_to_words):
        """`multi_span_results` of a multi-span model's question from its `windows`."""
        outputs, _, _, bounds = self.decoding_inputs(windows, align_to_words)
        # the answer's own path may be among the top_k most probable: one more makes top_k - 1 others
        paths = window_candidates(self.head, outputs, None, None, top_k + 1, None)
        best, ranked, _ = multi_span_answers([windows[0]["context"]], np.zeros(len(windows), dtype=np.int64), bounds,
                                             paths, top_k + 1, handle_impossible_answer, null_threshold)[0]
        return multi_span_results(best, ranked, float(paths.window_null.min()), top_k, handle_impossible_answer,
                                  null_threshold)

    def ranked_spans(self, windows, needed, max_answer_len, align_to_words):
        """(answers, null rank, the empty answer's `score`) of a single-span model's question from its `windows`:
        at least `needed` distinct answers where its windows have them (`distinct_answers`: best first, each with
        its ranking score `rank`: start + end logit, or log P(path)), and its null score (the lowest of its
        windows')."""
        context, collection = windows[0]["context"], windows[0]["passages"]
        outputs, offsets, cls_index, bounds = self.decoding_inputs(windows, align_to_words)
        # Each window gives its best spans, as transformers 4 takes them (more when that makes fewer than the
        # distinct answers needed and a window may have more).
        per_window, found = needed * 2 + 10 if align_to_words else needed, -1
        while True:
            candidates = window_candidates(self.head, outputs, offsets[..., 0] >= 0, cls_index, per_window,
                                           max_answer_len)
            scores, null_score = self.reported_scores(outputs, offsets, cls_index, candidates, shared=bool(collection))
            char_start = bounds[candidates.window, candidates.start, 0].tolist()
            char_end = bounds[candidates.window, candidates.end, 1].tolist()
            passage = collection.passage_of(char_start).tolist() if collection else [0] * len(char_start)
            answers = distinct_answers(context, candidates, scores, char_start, char_end, self.combine_scores,
                                       passage)
            if len(answers) >= needed or len(candidates.window) == found:
                return answers, float(candidates.window_null.min()), null_score
            per_window, found = per_window * 2, len(candidates.window)

    def window_outputs(self, windows, lengths):
        """The head's `OUTPUT_FIELDS` of a question's windows as arrays, one row per window (logits cut to each
        window's `lengths` tokens, out of a batch padded on the right, and padded with -1e4 to the longest)."""
        fields = OUTPUT_FIELDS[self.head]
        if self.head != "span":  # windows of batches that asked for different numbers of paths, or list other spans
            fills = {"span_score": -np.inf, "path_score": -np.inf, "span_path": -1}
            rows = ([w[f].numpy().reshape(-1) for w in windows] for f in fields)
            return tuple(stacked(row, fills.get(f, 0), row[0].dtype) for f, row in zip(fields, rows))
        return tuple(stacked([w[f].reshape(-1).numpy()[:length] for w, length in zip(windows, lengths)], -1e4,
                             np.float32) for f in fields)

    @property
    def combine_scores(self):
        """How the scores of equal answers are merged: a span model's added, as transformers 4 adds them (so a text
        found in several windows may score above 1); a CRF model's the highest, the probability of the most probable
        of their tag paths."""
        return max if self.head == "crf" else operator.add

    def reported_scores(self, outputs, offsets, cls_index, candidates, shared=False):
        """(each candidate's `score`, the empty answer's `score`): for a span model transformers 4's
        (`library_scores`, over all the windows together when `shared`: a question over passages; the empty
        answer's the lowest of its windows'), for a CRF model tag path probabilities (the empty answer's the lowest
        P(all tags O) of its windows), each normalised over its window's paths, the all-O one among them."""
        if self.head == "crf":
            return (np.exp(candidates.score.astype(np.float64)).tolist(),
                    float(np.exp(candidates.window_null.astype(np.float64)).min()))
        score, null_score = library_scores(*outputs, offsets[..., 0] >= 0, cls_index, candidates, shared)
        return score.tolist(), float(null_score.min())
