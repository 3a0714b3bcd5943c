#!/usr/bin/env python
"""Fine-tune and evaluate SpanBERT+CRF for extractive QA: BIO tags per token, constrained n-best decoding (each
window's most probable single-span tag paths).

    accelerate launch run_qa_crf.py --model_name_or_path SpanBERT/spanbert-base-cased \
        --dataset_name rajpurkar/squad_v2 --version_2_with_negative --do_train --do_eval --output_dir out
"""

from modeling_crf import CrfForQuestionAnswering
from qa_runner import Head, main
from utils_qa import crf_head_candidates


def load_crf_model(model_args, hub_kwargs):
    """Encoder + emissions + CRF; from a plain encoder checkpoint the head and the CRF start fresh."""
    return CrfForQuestionAnswering.from_pretrained(
        model_args.model_name_or_path, emission_relu=model_args.emission_relu, **hub_kwargs
    )


CRF_HEAD = Head(name="crf", load_model=load_crf_model, label_scheme="bio", candidates=crf_head_candidates)

if __name__ == "__main__":
    main(CRF_HEAD)
