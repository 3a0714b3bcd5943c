#!/usr/bin/env python
"""Fine-tune and evaluate SpanBERT+CRF for extractive QA: BIO tags per token, constrained n-best decoding (each
window's most probable single-span tag paths).

    accelerate launch run_qa_crf.py --model_name_or_path SpanBERT/spanbert-base-cased \
        --dataset_name rajpurkar/squad_v2 --version_2_with_negative --do_train --do_eval --output_dir out
"""

from transformers import AutoConfig

from modeling_crf import CrfForQuestionAnswering
from qa_runner import Head, main


def load_crf_model(model_args, data_args, hub_kwargs):
    """(Encoder + emissions + CRF, its loading report), decoding the `--n_best_size` best single-span paths of at
    most `--max_answer_length` tokens; from a plain encoder checkpoint the head and the CRF start fresh.
    `--config_name` names a CRF config, or the encoder's."""
    config = AutoConfig.from_pretrained(model_args.config_name, **hub_kwargs) if model_args.config_name else None
    given = {} if model_args.emission_relu is None else {"emission_relu": model_args.emission_relu}
    return CrfForQuestionAnswering.from_pretrained(
        model_args.model_name_or_path, config=config, n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length, output_loading_info=True, ignore_mismatched_sizes=True, **given,
        **hub_kwargs
    )


CRF_HEAD = Head(name="crf", load_model=load_crf_model, label_scheme="bio",
                parameter_groups=CrfForQuestionAnswering.parameter_groups)

if __name__ == "__main__":
    main(CRF_HEAD)
