"""The code every model folder carries: the files here are copied beside the weights of each folder a run saves or
pushes, and transformers imports them from there (`trust_remote_code=True`) in processes that know nothing of this
project.

Every folder carries `PIPELINE_FILES`: `qa_pipeline.py`, the pipeline that `config.custom_pipelines` names, the
modules it imports (`qa_settings`, `qa_windows`, `qa_decoding`, `span_decoding`, `calibration`, `qa_passages`),
`handler.py`, the Inference Endpoints handler, and a `requirements.txt` (`requirements_txt`). A CRF folder also carries
`modeling_crf.py` and `crf_decoding.py`, which `save_pretrained` copies as the model's code (`config.auto_map`).

The modules import each other relatively and nothing else of the project, so a folder that lacks one of them fails
to load instead of running this project's copy. Evaluation imports them from here: the pipeline and evaluation run
the same windowing and decoding code.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
PIPELINE_FILES = tuple(FOLDER / name for name in ("qa_pipeline.py", "qa_settings.py", "qa_windows.py", "qa_decoding.py",
                                                  "span_decoding.py", "calibration.py", "qa_passages.py",
                                                  "handler.py"))
# What a folder's code imports beyond torch, with the versions tested: a folder's requirements.txt, which the
# Inference Endpoints toolkit installs when it starts. The pipeline serves on transformers 4.51 and later (the
# toolkit's 4.51.3, transformers 4.55 and 5 tested); the CRF model is a transformers 5 model.
REQUIREMENTS = {
    "span": ("transformers>=4.51", "numpy>=1.26"),
    "crf": ("transformers>=5.24,<6", "numpy>=1.26", "pytorch-crf==0.7.2"),
}


def requirements_txt(head):
    """The requirements.txt of a folder of a `head` ("span" or "crf") model."""
    return (f"# What this {head} model folder's code needs beside torch (spanbert-qa)\n"
            + "".join(f"{line}\n" for line in REQUIREMENTS[head]))


PIPELINE_ENTRY = {
    "question-answering": {"impl": "qa_pipeline.QuestionAnsweringPipeline", "pt": ["AutoModelForQuestionAnswering"],
                           "type": "text"}
}
