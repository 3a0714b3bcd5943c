"""The code every model folder carries: the files here are copied beside the weights of each folder a run saves or
pushes, and transformers imports them from there (`trust_remote_code=True`) in processes that know nothing of this
project.

Every folder carries `PIPELINE_FILES`: `qa_pipeline.py`, the pipeline that `config.custom_pipelines` names, the
modules it imports (`qa_settings`, `qa_windows`, `qa_decoding`, `span_decoding`, `calibration`), and `handler.py`,
the Inference Endpoints handler. A CRF folder also carries `modeling_crf.py` and `crf_decoding.py`, which
`save_pretrained` copies as the model's code (`config.auto_map`).

The modules import each other relatively and nothing else of the project, so a folder that lacks one of them fails
to load instead of running this project's copy. Evaluation imports them from here: the pipeline and evaluation run
the same windowing and decoding code.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
PIPELINE_FILES = tuple(FOLDER / name for name in ("qa_pipeline.py", "qa_settings.py", "qa_windows.py", "qa_decoding.py",
                                                  "span_decoding.py", "calibration.py", "handler.py"))
PIPELINE_ENTRY = {
    "question-answering": {"impl": "qa_pipeline.QuestionAnsweringPipeline", "pt": ["AutoModelForQuestionAnswering"],
                           "type": "text"}
}
