"""Shared normalisation (Clark & Gardner 2018, "Simple and Effective Multi-Paragraph Reading Comprehension"): a span
model trained with the start and end scores of all the windows of a question normalised together (`--shared_norm`).

A span model's start / end scores are trained with one softmax per window, so a window learns only which of its own
tokens starts the answer, and nothing ties one window's scores to another's: over many passages (the reader,
`model_folder/qa_passages.py`) the best span of a passage that does not answer the question can outscore the right
one. With shared normalisation the softmax runs over every token of every window of the question (its passage cut
into windows and, with `--distractor_passages`, other paragraphs of its article), so the scores are trained to
compare across windows and passages. The targets:

- a question whose answer lies in some of its windows: the answer's start (end) in any of them, the probabilities of
  its copies added ("either copy is right");
- a question none of whose windows holds an answer: the [CLS] token of every window, each with an equal share, so
  that every window's null score is pushed above every span of the question. The reader's collection null score is
  the lowest of its windows' (`qa_passages`), which this target raises as a whole.

A training batch then holds whole questions (`QuestionBatchSampler`).
"""

import numpy as np
import torch
from torch.utils.data import Sampler

# How many batches are ordered by their questions' longest window at a time: batches of similar width pad less,
# while the batches themselves come in random order.
SORTED_BATCHES = 50


def shared_side_loss(logits, positions, cls_index, attention_mask, questions):
    """Mean over questions of the cross-entropy of one side (start or end) normalised over all their windows.

    logits: (windows, tokens) scores; positions: (windows,) the gold token of each window, its `cls_index` where the
    window does not hold the answer; attention_mask: (windows, tokens), 0 on padding (never a candidate);
    questions: (windows,) the question of each window (any integer ids).
    """
    logits = logits.float().masked_fill(attention_mask == 0, float("-inf"))
    _, group = torch.unique(questions, return_inverse=True)
    member = group.unsqueeze(0) == torch.arange(int(group.max()) + 1, device=group.device).unsqueeze(1)  # (q, w)
    none = torch.tensor(float("-inf"), device=logits.device)

    def per_question(values):  # logsumexp over each question's windows: (windows,) -> (questions,)
        return torch.logsumexp(torch.where(member, values.unsqueeze(0), none), dim=1)

    normaliser = per_question(torch.logsumexp(logits, dim=1))
    gold = logits.gather(1, positions.unsqueeze(1)).squeeze(1)
    holds_answer = positions != cls_index
    answered = (member & holds_answer.unsqueeze(0)).any(dim=1)
    answer_score = per_question(torch.where(holds_answer, gold, none))
    null_score = (member * logits.gather(1, cls_index.unsqueeze(1)).squeeze(1)).sum(dim=1) / member.sum(dim=1)
    return (normaliser - torch.where(answered, answer_score, null_score)).mean()


def shared_norm_loss(start_logits, end_logits, start_positions, end_positions, cls_index, attention_mask, questions):
    """The span loss with shared normalisation: the mean of the start and end sides' `shared_side_loss` (as a span
    model's own loss is the mean of its two cross-entropies). Shapes as `shared_side_loss`'s."""
    return (shared_side_loss(start_logits, start_positions, cls_index, attention_mask, questions)
            + shared_side_loss(end_logits, end_positions, cls_index, attention_mask, questions)) / 2


class QuestionBatchSampler(Sampler):
    """Batches of whole questions: every window of a question in the same batch, so that its scores can be
    normalised together. A batch holds `questions_per_batch` questions (the windows they have); their order depends
    only on the seed and the epoch (a resumed run, and every process of a launch, draw the same batches). Questions
    are shuffled, then `SORTED_BATCHES` batches at a time ordered by their longest window, then the batches
    shuffled.

    question_of_window: (windows,) the question of each window; lengths: (windows,) tokens of each window.
    """

    def __init__(self, question_of_window, lengths, questions_per_batch, seed):
        question_of_window = np.asarray(question_of_window)
        order = np.argsort(question_of_window, kind="stable")
        _, first, counts = np.unique(question_of_window[order], return_index=True, return_counts=True)
        self.windows = np.split(order, first[1:])  # each question's windows, in dataset order
        self.longest = np.maximum.reduceat(np.asarray(lengths)[order], first)
        self.questions_per_batch = questions_per_batch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-len(self.windows) // self.questions_per_batch)

    def __iter__(self):
        generator = np.random.default_rng(self.seed + self.epoch)
        shuffled = generator.permutation(len(self.windows))
        chunk = self.questions_per_batch * SORTED_BATCHES
        ordered = np.concatenate([part[np.argsort(-self.longest[part], kind="stable")]
                                  for part in np.split(shuffled, range(chunk, len(shuffled), chunk))])
        batches = np.split(ordered, range(self.questions_per_batch, len(ordered), self.questions_per_batch))
        for b in generator.permutation(len(batches)):
            yield np.concatenate([self.windows[q] for q in batches[b]]).tolist()


def questions_per_batch(question_of_window, batch_size):
    """Questions a batch holds so that it has `batch_size` windows on average (at least one)."""
    questions = len(np.unique(np.asarray(question_of_window)))
    return max(1, round(batch_size * questions / len(question_of_window)))
