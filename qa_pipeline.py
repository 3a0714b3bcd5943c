"""Extractive question answering as a `transformers` pipeline, for the models spanbert-qa trains.

transformers 5.3 removed the "question-answering" task; a model folder brings it back by carrying this file (with
`qa_windows.py` and `span_decoding.py`) and naming it in `config.custom_pipelines`:

    from transformers import pipeline
    qa = pipeline("question-answering", model="path/or/hub-id", trust_remote_code=True)
    qa(question="Who?", context="...")  # {"score": ..., "start": ..., "end": ..., "answer": ...}

Windows are cut and answers decoded by the same code as evaluation; a CRF model's answers come from its
constrained Viterbi decoding, a span model's from its start/end logits.
"""

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline

from .qa_windows import cls_indices, context_offsets, tokenized_windows
from .span_decoding import WindowCandidates, null_scores, ranked_answers, span_candidates

# Evaluation settings run_qa.py stores in the config; these defaults serve other models.
DEFAULTS = {"max_seq_length": 384, "doc_stride": 128, "max_answer_length": 30, "n_best_size": 20,
            "null_score_diff_threshold": 0.0}


def questions_and_contexts(args, kwargs):
    """The pipeline's input as a list of {"question", "context"} dicts, and whether a single one was given."""
    if args:
        inputs = args[0]
    elif "question" in kwargs and "context" in kwargs:
        questions, contexts = kwargs.pop("question"), kwargs.pop("context")
        if isinstance(questions, str) and isinstance(contexts, str):
            inputs = {"question": questions, "context": contexts}
        else:
            questions = [questions] * len(contexts) if isinstance(questions, str) else questions
            contexts = [contexts] * len(questions) if isinstance(contexts, str) else contexts
            if len(questions) != len(contexts):
                raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
            inputs = [{"question": q, "context": c} for q, c in zip(questions, contexts)]
    else:
        raise ValueError("Give question=... and context=... (strings or lists), or {'question', 'context'} dicts")
    single = isinstance(inputs, dict)
    for item in [inputs] if single else inputs:
        if not isinstance(item, dict) or not item.get("question", "").strip() or not item.get("context", "").strip():
            raise ValueError(f"Each input needs a non-empty 'question' and 'context', got {item!r}")
    return inputs, single


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
    tuned at evaluation, or `null_score_diff_threshold` if given), `align_to_words` (default True), and
    `batch_size` (windows per forward pass). Defaults come from the settings the model was evaluated with.
    """

    def __call__(self, *args, **kwargs):
        inputs, single = questions_and_contexts(args, kwargs)
        results = super().__call__([inputs] if single else inputs, **kwargs)
        return results[0] if single else results

    def _sanitize_parameters(self, top_k=None, doc_stride=None, max_seq_len=None, max_question_len=None,
                             max_answer_len=None, handle_impossible_answer=None, align_to_words=None,
                             null_score_diff_threshold=None, **kwargs):
        settings = {**DEFAULTS, **getattr(self.model.config, "qa_settings", {})}
        preprocess = {"max_seq_len": max_seq_len or settings["max_seq_length"],
                      "doc_stride": doc_stride or settings["doc_stride"], "max_question_len": max_question_len}
        postprocess = {
            "top_k": top_k or 1,
            "max_answer_len": max_answer_len or settings["max_answer_length"],
            "n_best": max(settings["n_best_size"], top_k or 1),
            "handle_impossible_answer": bool(handle_impossible_answer),
            "null_threshold": settings["null_score_diff_threshold"] if null_score_diff_threshold is None
            else null_score_diff_threshold,
            "align_to_words": True if align_to_words is None else align_to_words,
        }
        return preprocess, {}, postprocess

    def preprocess(self, inputs, max_seq_len=384, doc_stride=128, max_question_len=None):
        question, context = inputs["question"], inputs["context"]
        encoded = tokenized_windows([question], [context], ["input"], self.tokenizer, max_seq_len, doc_stride,
                                    max_question_len=max_question_len)
        offsets = context_offsets(encoded, self.tokenizer)
        cls_index = cls_indices(encoded, self.tokenizer)
        names = [n for n in self.tokenizer.model_input_names if n in encoded]
        for w in range(len(encoded["input_ids"])):
            window = {name: torch.tensor([encoded[name][w]]) for name in names}
            window["context_mask"] = torch.from_numpy(offsets[w][:, 0] >= 0)[None]
            yield {**window, "offsets": offsets[w], "cls_index": cls_index[w], "context": context,
                   "is_last": w == len(encoded["input_ids"]) - 1}

    def _forward(self, inputs):
        keep = {"offsets", "cls_index", "context", "is_last"}
        model_inputs = {k: v for k, v in inputs.items() if k not in keep}
        if not hasattr(self.model, "crf"):
            model_inputs.pop("context_mask")
        outputs = self.model(**model_inputs)
        fields = ("span_start", "span_end", "span_score", "null_score") if hasattr(self.model, "crf") else (
            "start_logits", "end_logits")
        floats = {f: outputs[f].float() if outputs[f].is_floating_point() else outputs[f] for f in fields}
        return {**{k: inputs[k] for k in keep}, **floats}

    def postprocess(self, windows, top_k=1, max_answer_len=30, n_best=20, handle_impossible_answer=False,
                    null_threshold=0.0, align_to_words=True):
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
            # the empty answer ranks as if its score were lowered by the tuned threshold
            answers.sort(key=lambda a: -(a["score"] - null_threshold if a["text"] == "" else a["score"]))
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

