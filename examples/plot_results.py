#!/usr/bin/env python
"""Figures of committed runs (results/<run>/), rendered from the runs' own files.

    python examples/plot_results.py spans OUTPUT_DIR/eval_nbest_predictions.json results/RUN/eval_span_predictions.json
    python examples/plot_results.py plot --dev DEV.json.gz --out results/plots results/RUN_A results/RUN_B ...
    python examples/plot_results.py reliability results/RUN/holdout_calibration.json ... --out results/plots/reliability.png

`spans` keeps each question's best non-empty answer from an n-best file: with `eval_null_odds.json` it is what
the SQuAD v2 metric scores at every no-answer threshold (the official script's `--na-prob-file` and
`--na-prob-thresh` take the null odds as they are).

`plot` writes two PNGs for the runs given:
- `training_loss.png`: the training loss logged in each run's `trainer_state.json`, against the step;
- `no_answer_threshold.png`: F1 and exact match on the dev set against the no-answer threshold (answer "" when
  the null odds exceed it), from `eval_span_predictions.json` and `eval_null_odds.json`, with the threshold each
  run applied (`holdout_results.json`'s F1-best one where the run has it, else 0, the default) marked.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from metrics.squad_v2.compute_score import gold_answers, is_answerable, raw_scores  # noqa: E402
from qa_data import questions_from_file  # noqa: E402

PANELS_PER_ROW = 2  # runs are given in pairs (span, CRF)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def best_spans(nbest):
    """{id: best non-empty answer text, or "" if the list has none}."""
    return {qid: next((a["text"] for a in answers if a["text"]), "") for qid, answers in nbest.items()}


def threshold_curve(spans, null_odds, answers):
    """(thresholds, exact %, f1 %): the scores when a question is answered "" iff its null odds exceed the
    threshold, at every threshold where the answer of some question changes (plus one below them all).

    answers: {id: the question's gold answer texts, [] if it has none}."""
    exact, f1 = raw_scores(spans, {qid: gold_answers(texts) for qid, texts in answers.items()})
    qids = sorted(answers, key=lambda qid: null_odds[qid])
    odds = np.array([null_odds[qid] for qid in qids])
    answerable = np.array([is_answerable(answers[qid]) for qid in qids])
    abstained = (~answerable).astype(float)  # abstaining is right exactly on the unanswerable questions
    curves = []
    for raw in (exact, f1):
        answered = np.array([raw[qid] for qid in qids])
        # at the k-th threshold (odds[k-1]) the k questions with the lowest odds are answered
        gain = np.concatenate([[0.0], np.cumsum(answered - abstained)])
        curves.append(100.0 * (abstained.sum() + gain) / len(qids))
    return np.concatenate([[odds[0] - 1.0], odds]), curves[0], curves[1]


def applied_threshold(run):
    holdout = os.path.join(run, "holdout_results.json")
    return read_json(holdout)["eval_best_f1_null_score_diff_threshold"] if os.path.exists(holdout) else 0.0


def plot_losses(runs, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        logs = [log for log in read_json(os.path.join(run, "trainer_state.json"))["log_history"] if "loss" in log]
        ax.plot([log["step"] for log in logs], [log["loss"] for log in logs], label=os.path.basename(run))
    # log scale: the CRF loss (negative log-likelihood of a tag path) and the span loss differ in size
    ax.set(xlabel="training step", ylabel="training loss (log scale)", yscale="log",
           title="Training loss (MiniLM-L6-H384, SQuAD v2 subset)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def panel_grid(count, width, height):
    """A figure of `count` panels of `width` x `height` inches, PANELS_PER_ROW to a row, and those panels."""
    import matplotlib.pyplot as plt

    columns = min(count, PANELS_PER_ROW)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes.flat[:count]


def save_figure(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_thresholds(runs, answers, path):
    fig, axes = panel_grid(len(runs), 5.5, 4)
    for ax, run in zip(axes, runs):
        spans = read_json(os.path.join(run, "eval_span_predictions.json"))
        thresholds, exact, f1 = threshold_curve(spans, read_json(os.path.join(run, "eval_null_odds.json")), answers)
        ax.plot(thresholds, f1, label="F1")
        ax.plot(thresholds, exact, label="exact match")
        chosen = applied_threshold(run)
        at = np.searchsorted(thresholds, chosen, side="right") - 1
        ax.axvline(chosen, color="k", linestyle="--", linewidth=1,
                   label=f"applied {chosen:.2f}: F1 {f1[max(at, 0)]:.1f}")
        best = int(np.argmax(f1))
        ax.plot(thresholds[best], f1[best], "o", color="C3", label=f"dev-best {thresholds[best]:.2f}: F1 {f1[best]:.1f}")
        ax.set(xlabel="no-answer threshold (null score - best span score)", ylabel="score on the dev set (%)",
               title=os.path.basename(run))
        low, high = np.percentile(thresholds, [0.5, 99.5])
        margin = 0.05 * (high - low)
        marked = (chosen, thresholds[best])
        ax.set_xlim(min(low, *marked) - margin, max(high, *marked) + margin)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_reliability(files, path):
    """Reliability diagrams: per calibration file (`eval_calibration.json`, or `calibration_holdout.py measure`'s),
    the fraction right against the mean probability in each of its bins, calibrated and raw, with the diagonal."""
    fig, axes = panel_grid(len(files), 5, 4.5)
    for ax, file in zip(axes, files):
        figures = read_json(file)
        for name, label in (("calibrated", "probability"), ("raw", "raw score")):
            filled = [b for b in figures["bins"][name] if b["count"]]
            ax.plot([b["probability"] for b in filled], [b["right"] for b in filled], "o-",
                    label=f"{label} (ECE {figures[f'{name}_ece']:.3f})")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        title = os.path.basename(os.path.dirname(os.path.abspath(file)))
        ax.set(xlabel="mean probability in the bin", ylabel="fraction right", xlim=(0, 1), ylim=(0, 1),
               title=f"{title}: {os.path.basename(file)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    spans = commands.add_parser("spans", help="best non-empty answer per question from an n-best file")
    spans.add_argument("nbest")
    spans.add_argument("out")
    plot = commands.add_parser("plot", help="training loss and no-answer threshold figures")
    plot.add_argument("runs", nargs="+")
    plot.add_argument("--dev", required=True, help="the SQuAD v2 dev file the runs were evaluated on")
    plot.add_argument("--out", required=True, help="folder for the PNG files")
    reliability = commands.add_parser("reliability", help="reliability diagrams of calibration files")
    reliability.add_argument("files", nargs="+")
    reliability.add_argument("--out", required=True, help="the PNG file")
    args = parser.parse_args()
    if args.command == "reliability":
        plot_reliability(args.files, args.out)
        print(f"wrote {args.out}")
        return
    if args.command == "spans":
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(best_spans(read_json(args.nbest)), f, ensure_ascii=False, indent=2)
        return
    questions = questions_from_file(args.dev).rows
    answers = {qid: a["text"] for qid, a in zip(questions["id"], questions["answers"])}
    os.makedirs(args.out, exist_ok=True)
    plot_losses(args.runs, os.path.join(args.out, "training_loss.png"))
    plot_thresholds(args.runs, answers, os.path.join(args.out, "no_answer_threshold.png"))
    print(f"wrote {args.out}/training_loss.png and {args.out}/no_answer_threshold.png")


if __name__ == "__main__":
    main()
