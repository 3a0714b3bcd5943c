#!/usr/bin/env python
"""Fine-tune and evaluate a start/end span model for extractive QA (SQuAD v1.1 / v2.0).

    accelerate launch run_qa.py --model_name_or_path SpanBERT/spanbert-base-cased \
        --dataset_name rajpurkar/squad_v2 --version_2_with_negative --do_train --do_eval --output_dir out
    python run_qa.py config.json
"""

from transformers import AutoConfig, AutoModelForQuestionAnswering

from qa_runner import Head, main


def load_span_model(model_args, data_args, hub_kwargs):
    """(A start/end-logit QA model, its loading report); the QA head starts fresh when the checkpoint is a plain
    encoder."""
    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path, **hub_kwargs)
    return AutoModelForQuestionAnswering.from_pretrained(model_args.model_name_or_path, config=config,
                                                         output_loading_info=True, ignore_mismatched_sizes=True,
                                                         **hub_kwargs)


SPAN_HEAD = Head(name="span", load_model=load_span_model, label_scheme="span")

if __name__ == "__main__":
    main(SPAN_HEAD)
