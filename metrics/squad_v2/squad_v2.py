"""SQuAD v2.0 (and v1.1) metric as a local `evaluate` module, usable offline."""

import datasets
import evaluate

from .compute_score import squad_v1_scores, squad_v2_scores

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing",
    year = "2016",
    pages = "2383--2392",
}

@inproceedings{rajpurkar-etal-2018-know,
    title = "Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}",
    author = "Rajpurkar, Pranav and Jia, Robin and Liang, Percy",
    booktitle = "Proceedings of the 56th Annual Meeting of the Association for Computational Linguistics (Volume 2: Short Papers)",
    year = "2018",
    pages = "784--789",
}
"""

_DESCRIPTION = """\
Scores extractive question answering the way the official SQuAD evaluation does.

Predicted and gold answers are normalised (lower case, no punctuation, no
articles a/an/the, single spaces) and compared by exact match and by token
F1, keeping the best score over a question's gold answers.

The default configuration is SQuAD v2.0, where some questions have no answer:
their only gold answer is the empty string, and a prediction whose
no-answer probability is above `no_answer_threshold` counts as "no answer".
The "probability" may be any real score where higher means more likely
unanswerable (a probability, or null odds, as this package's scripts pass):
the evaluation only compares these values with each other and with the
threshold. It also reports the scores at the best no-answer threshold, and
that threshold in the same units: passed back as `no_answer_threshold`, it
gives `exact`/`f1` equal to `best_exact`/`best_f1`.
The "squad" configuration is SQuAD v1.1: every question has an answer.

Predictions and references are matched by id. A reference without a
prediction counts as a wrong answer, and a warning says how many there were.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of dicts, one per question:
        - 'id': question id,
        - 'prediction_text': the predicted answer ("" for no answer),
        - 'no_answer_probability': (default configuration only) how likely the
          question is to have no answer: a probability, or any real score where
          higher means more likely unanswerable (the scripts pass the null
          odds, null score - best span score, of any size).
    references: list of dicts, one per question:
        - 'id': question id,
        - 'answers': {'text': [gold answers], 'answer_start': [their character
          offsets]}; empty lists for an unanswerable question.
    no_answer_threshold: (default configuration only, default 1.0, in the units
        of 'no_answer_probability') a prediction whose no-answer probability is
        strictly above it counts as "no answer" (its text is replaced by "").
Returns:
    default (SQuAD v2.0) configuration, scores in percent:
        'exact', 'f1': over all questions,
        'total': number of questions,
        'HasAns_exact', 'HasAns_f1', 'HasAns_total': over answerable questions (if any),
        'NoAns_exact', 'NoAns_f1', 'NoAns_total': over unanswerable questions (if any),
        'best_exact', 'best_exact_thresh', 'best_f1', 'best_f1_thresh': the scores
            at the best no-answer threshold, and that threshold, in the units of
            'no_answer_probability'. Questions with equal values are answered or
            abstain together, and the threshold is the value of the last
            question answered, or, when abstaining on every question is best,
            the smallest value minus 1 (the official script says 0.0 there).
            Passed back as `no_answer_threshold`, a best threshold gives exactly
            best_exact / best_f1 (except where an unanswerable question is
            answered with a text that normalises to nothing, such as "the":
            the official best-threshold search counts it wrong, exact/f1 right).
    "squad" (SQuAD v1.1) configuration, scores in percent:
        'exact_match', 'f1'.
Examples:
    >>> squad_v2 = evaluate.load("metrics/squad_v2")
    >>> predictions = [{"id": "q1", "prediction_text": "1976", "no_answer_probability": 0.0}]
    >>> references = [{"id": "q1", "answers": {"text": ["1976"], "answer_start": [97]}}]
    >>> squad_v2.compute(predictions=predictions, references=references)["exact"]
    100.0
    >>> squad = evaluate.load("metrics/squad_v2", "squad")
    >>> squad.compute(predictions=[{"id": "q1", "prediction_text": "in 1976"}], references=references)
    {'exact_match': 0.0, 'f1': 66.66666666666666}
"""

_ANSWERS = {
    "text": datasets.List(datasets.Value("string")),
    "answer_start": datasets.List(datasets.Value("int32")),
}
_V1_PREDICTION = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
# float64 rather than float32: the values reach the search and the threshold rule as given (float32 would round
# null odds to 24 bits, merge distinct values into ties and report thresholds that are not the inputs).
_V2_PREDICTION = {**_V1_PREDICTION, "no_answer_probability": datasets.Value("float64")}
_PREDICTION_FEATURES = {"default": _V2_PREDICTION, "squad": _V1_PREDICTION}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV2(evaluate.Metric):
    def _info(self):
        if self.config_name not in _PREDICTION_FEATURES:
            raise ValueError(
                f"unknown configuration {self.config_name!r}, expected one of {list(_PREDICTION_FEATURES)}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": _PREDICTION_FEATURES[self.config_name],
                    "references": {"id": datasets.Value("string"), "answers": _ANSWERS},
                }
            ),
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        golds = {ref["id"]: ref["answers"]["text"] for ref in references}
        if self.config_name == "squad":
            texts = {pred["id"]: pred["prediction_text"] for pred in predictions}
            return squad_v1_scores(texts, golds)
        answers = {
            pred["id"]: (pred["prediction_text"], pred["no_answer_probability"]) for pred in predictions
        }
        return squad_v2_scores(answers, golds, no_answer_threshold)
