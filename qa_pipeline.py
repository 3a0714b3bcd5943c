"""Extractive question answering as a `transformers` pipeline, for the models spanbert-qa trains.

transformers 5.3 removed the "question-answering" task; a model folder brings it back by carrying this file (with
`qa_windows.py` and `span_decoding.py`) and naming it in `config.custom_pipelines`:

    from transformers import pipeline
    qa = pipeline("question-answering", model="path/or/hub-id", trust_remote_code=True)
    qa(question="Who?", context="...")  # {"score": ..., "start": ..., "end": ..., "answer": ...}

Windows are cut and answers decoded by the same code as evaluation; a CRF model's answers come from its
constrained Viterbi decoding, a span model's from its start/end logits.
"""

from numbers import Integral

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline

from .qa_windows import cls_indices, context_offsets, max_question_tokens, tokenized_windows
from .span_decoding import WindowCandidates, null_scores, ranked_answers, softmax, span_candidates

# Evaluation settings run_qa.py stores in the config; these defaults serve other models.
DEFAULTS = {"max_seq_length": 384, "doc_stride": 128, "max_answer_length": 30, "n_best_size": 20,
            "null_score_diff_threshold": 0.0}


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


def check_input(item, where):
    """Refuse an input that is not a dict with a non-empty "question" and "context" string."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a {{'question': ..., 'context': ...}} dict, got {item!r:.100}")
    for name in ("question", "context"):
        value = item.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: '{name}' must be a non-empty string, got {value!r:.100}")


def questions_and_contexts(args, kwargs):
    """The pipeline's input as a list of {"question", "context"} dicts, and whether a single one was given.

    Accepts question=..., context=... (strings or lists), a dict or a list of dicts, or (question, context)
    positionally as the old transformers pipeline did.
    """
    if args and ("question" in kwargs or "context" in kwargs):
        raise ValueError("Give the input either positionally or as question=... and context=..., not both")
    if len(args) == 2:
        inputs = paired(*args)
    elif len(args) == 1:
        inputs = list(args[0]) if isinstance(args[0], tuple) else args[0]
    elif not args and "question" in kwargs and "context" in kwargs:
        inputs = paired(kwargs.pop("question"), kwargs.pop("context"))
    else:
        raise ValueError("Give question=... and context=... (strings or lists), or {'question', 'context'} dicts")
    single = isinstance(inputs, dict)
    if not single and not isinstance(inputs, list):
        raise ValueError(f"Expected a {{'question', 'context'}} dict or a list of them, got {type(inputs).__name__}")
    for i, item in enumerate([inputs] if single else inputs):
        check_input(item, "input" if single else f"input {i}")
    return inputs, single


def given(**params):
    """The parameters that were passed (not None): at call time they override only what they name, so parameters
    given when the pipeline was built stay in force."""
    return {name: value for name, value in params.items() if value is not None}


def check_counts(minimum, **params):
    """Refuse a given parameter that is not an integer of at least `minimum` (a bool is not a count)."""
    for name, value in params.items():
        if value is not None and (not isinstance(value, Integral) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def thresholded(answers, threshold):
    """Answers with the empty one's score lowered by `threshold`, re-ranked, and their probabilities recomputed.

    Evaluation answers "" when null score - best span score > threshold; lowering the null score by the threshold
    ranks it first exactly then (a tie goes to the span). Recomputing the probabilities keeps the scores in the
    order of the ranking.
    """
    shifted = [dict(a, score=a["score"] - threshold) if a["text"] == "" else a for a in answers]
    shifted.sort(key=lambda a: (-a["score"], a["text"] == ""))
    for answer, probability in zip(shifted, softmax(np.array([a["score"] for a in shifted]))):
        answer["probability"] = float(probability)
    return shifted


def word_aligned(context, start, end):
    """(start, end) widened to whole words: runs of letters and digits are not cut."""
    while start > 0 and context[start - 1].isalnum() and context[start].isalnum():
        start -= 1
    while end < len(context) and context[end - 1].isalnum() and context[end].isalnum():
        end += 1
    return start, end


class QuestionAnsweringPipeline(ChunkPipeline):
    """Answers questions about contexts with a spanbert-qa model (span or CRF head).

    Call parameters: `top_k` (answers per question, default 1), `doc_stride`, `max_seq_len`, `max_question_len`,
    `max_answer_len`, `handle_impossible_answer` (allow "" as the answer, decided with the no-answer threshold
    the model's config holds, or `null_score_diff_threshold` if given), `align_to_words` (default True), and
    `batch_size` (windows per forward pass). Defaults come from the settings the model was evaluated with;
    parameters given when the pipeline is built hold for every call, and a call overrides only those it names.
    """

    def __call__(self, *args, **kwargs):
        inputs, single = questions_and_contexts(args, kwargs)
        if not single and not inputs:
            return []
        results = super().__call__([inputs] if single else inputs, **kwargs)
        return results[0] if single else results

    @property
    def settings(self):
        """The settings the model was evaluated with (from its config), over `DEFAULTS`."""
        return {**DEFAULTS, **(getattr(self.model.config, "qa_settings", None) or {})}

    def _sanitize_parameters(self, top_k=None, doc_stride=None, max_seq_len=None, max_question_len=None,
                             max_answer_len=None, handle_impossible_answer=None, align_to_words=None,
                             null_score_diff_threshold=None, **kwargs):
        # Only what was passed: transformers merges these over the parameters given when the pipeline was built.
        check_counts(1, top_k=top_k, max_seq_len=max_seq_len, max_question_len=max_question_len,
                     max_answer_len=max_answer_len)
        check_counts(0, doc_stride=doc_stride)
        preprocess = given(max_seq_len=max_seq_len, doc_stride=doc_stride, max_question_len=max_question_len)
        postprocess = given(top_k=top_k, max_answer_len=max_answer_len, align_to_words=align_to_words,
                            handle_impossible_answer=handle_impossible_answer, null_threshold=null_score_diff_threshold)
        return preprocess, {}, postprocess

    def window_sizes(self, max_seq_len, doc_stride):
        """(max_seq_len, doc_stride): the given ones, else evaluation's.

        Windows only advance if the stride is under half a window (the rule run_qa.py applies): a given stride
        that breaks it is refused, evaluation's stride is shrunk to a quarter of a shorter window.
        """
        settings = self.settings
        max_seq_len = settings["max_seq_length"] if max_seq_len is None else max_seq_len
        longest = self.tokenizer.model_max_length
        if max_seq_len > longest:
            raise ValueError(f"max_seq_len {max_seq_len} is longer than the model's {longest} tokens")
        if doc_stride is None:
            doc_stride = settings["doc_stride"] if settings["doc_stride"] < max_seq_len // 2 else max_seq_len // 4
        if doc_stride >= max_seq_len // 2:
            raise ValueError(f"doc_stride {doc_stride} must be less than half of max_seq_len {max_seq_len}")
        if max_question_tokens(self.tokenizer, max_seq_len, doc_stride) < 1:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a question beside doc_stride {doc_stride}")
        return max_seq_len, doc_stride

    def preprocess(self, inputs, max_seq_len=None, doc_stride=None, max_question_len=None):
        max_seq_len, doc_stride = self.window_sizes(max_seq_len, doc_stride)
        question, context = inputs["question"], inputs["context"]
        encoded = tokenized_windows([question], [context], ["input"], self.tokenizer, max_seq_len, doc_stride,
                                    max_question_len=max_question_len)
        offsets = context_offsets(encoded, self.tokenizer)
        if not any((o[:, 0] >= 0).any() for o in offsets):
            # e.g. only control or zero-width characters, which the tokenizer drops: there is nothing to answer from
            raise ValueError(f"The context {context!r:.100} has no text the tokenizer keeps")
        cls_index = cls_indices(encoded, self.tokenizer)
        names = [n for n in self.tokenizer.model_input_names if n in encoded]
        for w in range(len(encoded["input_ids"])):
            window = {name: torch.tensor([encoded[name][w]]) for name in names}
            window["context_mask"] = torch.from_numpy(offsets[w][:, 0] >= 0)[None]
            yield {**window, "offsets": offsets[w], "cls_index": cls_index[w], "context": context,
                   "is_last": w == len(encoded["input_ids"]) - 1}

    def _forward(self, inputs):
        keep = ("offsets", "cls_index", "context", "is_last")
        model_inputs = {k: v for k, v in inputs.items() if k not in keep}
        if not hasattr(self.model, "crf"):
            model_inputs.pop("context_mask")
        outputs = self.model(**model_inputs)
        fields = ("span_start", "span_end", "span_score", "null_score") if hasattr(self.model, "crf") else (
            "start_logits", "end_logits")
        floats = {f: outputs[f].float() if outputs[f].is_floating_point() else outputs[f] for f in fields}
        return {**{k: inputs[k] for k in keep}, **floats}

    def postprocess(self, windows, top_k=1, max_answer_len=None, handle_impossible_answer=False, null_threshold=None,
                    align_to_words=True):
        settings = self.settings
        max_answer_len = settings["max_answer_length"] if max_answer_len is None else max_answer_len
        null_threshold = settings["null_score_diff_threshold"] if null_threshold is None else null_threshold
        n_best = max(settings["n_best_size"], top_k)
        context = windows[0]["context"]
        for w in windows:  # batching adds a leading axis to arrays
            w["offsets"] = np.asarray(w["offsets"]).reshape(-1, 2)
        width = max(len(w["offsets"]) for w in windows)
        offsets = np.full((len(windows), width, 2), -1, dtype=np.int64)
        for i, w in enumerate(windows):
            offsets[i, : len(w["offsets"])] = w["offsets"]
        candidates = self.candidates(windows, offsets, n_best, max_answer_len)
        [(answers, null, best)] = ranked_answers([context], np.zeros(len(windows), dtype=np.int64), offsets,
                                                  candidates, n_best, handle_impossible_answer)
        if handle_impossible_answer:
            answers = thresholded(answers, null_threshold)
        results = []
        for answer in answers[:top_k]:
            start, end = answer["start"], answer["end"]
            if align_to_words and answer["text"]:
                start, end = word_aligned(context, start, end)
            results.append({"score": answer["probability"], "start": start, "end": end, "answer": context[start:end]})
        return results[0] if top_k == 1 else results

    def unpadded(self, logits, length):
        """The `length` logits of a window's own tokens, out of a row padded to its batch's longest window."""
        row = logits.reshape(-1).numpy()
        return row[len(row) - length :] if self.tokenizer.padding_side == "left" else row[:length]

    def candidates(self, windows, offsets, n_best, max_answer_len):
        """`WindowCandidates` of a question's windows, from the CRF's Viterbi spans or the span decoder."""
        if hasattr(self.model, "crf"):
            score = np.array([w["span_score"].item() for w in windows], dtype=np.float32)
            window = np.flatnonzero(np.isfinite(score))
            start = np.array([w["span_start"].item() for w in windows])[window]
            end = np.array([w["span_end"].item() for w in windows])[window]
            null = np.array([w["null_score"].item() for w in windows], dtype=np.float32)
            return WindowCandidates(window, start, end, score[window], null)
        start_logits = np.full(offsets.shape[:2], -1e4, dtype=np.float32)
        end_logits = np.full(offsets.shape[:2], -1e4, dtype=np.float32)
        for i, w in enumerate(windows):
            start_logits[i, : len(w["offsets"])] = self.unpadded(w["start_logits"], len(w["offsets"]))
            end_logits[i, : len(w["offsets"])] = self.unpadded(w["end_logits"], len(w["offsets"]))
        window, start, end, score = span_candidates(start_logits, end_logits, offsets[..., 0] >= 0, n_best, max_answer_len)
        cls_index = np.array([w["cls_index"] for w in windows])
        return WindowCandidates(window, start, end, score, null_scores(start_logits, end_logits, cls_index))

