"""SpanBERT + CRF for extractive question answering: `CrfQAConfig` and `CrfForQuestionAnswering`.

The model's code is in `model_folder/modeling_crf.py` (with its CRF algorithms in `model_folder/crf_decoding.py`):
`save_pretrained` copies the file that defines the model, and the files it imports relatively, into every CRF
model folder, and `trust_remote_code=True` loads them from there. Importing this module registers the model with
the Auto classes (`model_type` "crf_qa"), as importing that one does.
"""

from model_folder.modeling_crf import (  # noqa: F401
    CrfForQuestionAnswering,
    CrfPreTrainedModel,
    CrfQAConfig,
    CrfQuestionAnsweringOutput,
)

__all__ = ["CrfQAConfig", "CrfForQuestionAnswering", "CrfPreTrainedModel", "CrfQuestionAnsweringOutput"]
