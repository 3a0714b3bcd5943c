"""Model folders saved whole and pushed to the Hub with all they need: `PublishingTrainer`.

Every folder a run saves (the final one and each checkpoint) holds the Trainer's files and the code the folder
carries (the pipeline's, `model_folder.PIPELINE_FILES`), written so that an interrupted save never leaves a
half-written file under its final name. Pushes carry that code and the model card too; a Hub that refuses or cannot
be reached never costs the run its local outputs: the repo is created again at the end, and a failed final push is a
`HubPushError` saying where everything is and how to push it later.
"""

import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import constants as hub_constants
from transformers import Trainer
from transformers.trainer_utils import HubStrategy

from outputs import write_atomically

logger = logging.getLogger(__name__)


class HubPushError(RuntimeError):
    """The model could not be pushed to the Hub; the message says why and where the run's outputs are."""


def log_failed_push(job):
    if job.exception() is not None:
        logger.error(f"A checkpoint push to the Hub failed: {job.exception()}")


class PublishingTrainer(Trainer):
    """A `Trainer` whose saves are complete model folders and whose pushes carry them whole.

    Args (beyond `Trainer`'s):
        bundled_files: paths of the code files copied into every saved folder (final and checkpoints).
        requirements: the requirements.txt of every saved folder (what its code needs), or None.
        model_card: `() -> str`, the README.md of a checkpoint pushed during training (the run's final card is
            given to `create_model_card` / `push_to_hub` as `text`).
    """

    def __init__(self, *args, bundled_files=(), requirements=None, model_card=None, **kwargs):
        self.hub_unavailable = None  # the error that kept init_hf_repo from creating the Hub repo, if any
        super().__init__(*args, **kwargs)
        self.bundled_files = bundled_files
        self.requirements = requirements
        self.model_card = model_card

    def _save(self, output_dir=None, state_dict=None):
        """Save the model as the Trainer does, with the bundled code and requirements beside it (final folder and
        checkpoints).

        Files are written to a staging folder inside `output_dir` and then renamed into place one by one, so an
        interrupted save never leaves a half-written weights or config file under its final name."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:  # the Trainer's non-writing ranks, if any, take part as it decides
            return super()._save(output_dir, state_dict)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=output_dir)
        try:
            super()._save(staging, state_dict)
            for path in self.bundled_files:
                shutil.copy(path, staging)
            if self.requirements is not None:
                Path(staging, "requirements.txt").write_text(self.requirements, encoding="utf-8")
            for name in os.listdir(staging):
                os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        finally:
            shutil.rmtree(staging)

    def save_model(self, output_dir=None, _internal_call=False):
        """Save the model without pushing it (the Trainer pushes on every `save_model` under --push_to_hub): the run
        pushes once, at its end, with the evaluation results and model card beside the model."""
        return super().save_model(output_dir, _internal_call=True)

    def init_hf_repo(self, token=None, private=None):
        """Create the Hub repo as the Trainer does; when the Hub refuses or cannot be reached, warn and go on:
        training still saves every output locally, and `push_to_hub` tries again at the end."""
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as err:  # HTTP, connection and token errors alike: the run's local results come first
            self.hub_model_id, self.push_in_progress, self.hub_unavailable = self.args.hub_repo_name(), None, err
            logger.warning(f"Cannot create the Hub repo {self.hub_model_id} at {hub_constants.ENDPOINT}: {err}\n"
                           "Training goes on and saves everything in the output folder; the push is tried again at "
                           "the end of the run.")

    def _push_from_checkpoint(self, checkpoint_folder):
        """Push the checkpoint's model as the Trainer does, with all of it: the Trainer copies only config,
        weights and tokenizer into the folder it pushes, while the config names code files (the pipeline's, a
        custom model's, with their requirements.txt) that a repo without them cannot load; the model card is
        written beside them. A failed
        push is logged when it ends (the Trainer runs it in the background and would drop its error)."""
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if self.hub_unavailable is not None:  # the repo could not be created: the end of the run tries again
            return
        for path in [*glob.glob(os.path.join(checkpoint_folder, "*.py")),
                     *glob.glob(os.path.join(checkpoint_folder, "requirements.txt"))]:
            shutil.copy(path, self.args.output_dir)
        self.create_model_card()
        running = set(self.push_in_progress.jobs) if self.push_in_progress is not None else set()
        super()._push_from_checkpoint(checkpoint_folder)
        for job in self.push_in_progress.jobs if self.push_in_progress is not None else ():
            if job not in running:
                job.add_done_callback(log_failed_push)

    def push_to_hub(self, *args, **kwargs):
        """`Trainer.push_to_hub`, with a repo the Hub refused earlier created again first; any failure becomes a
        `HubPushError` saying where the run's outputs are."""
        try:
            if self.hub_unavailable is not None and self.is_world_process_zero():
                Trainer.init_hf_repo(self)
            return super().push_to_hub(*args, **kwargs)
        except Exception as err:  # HTTP, connection and token errors alike
            repo = self.args.hub_repo_name()
            raise HubPushError(
                f"Could not push to the Hub repo {repo} at {hub_constants.ENDPOINT}: {err}\nNothing is lost: the "
                f"model and every output of the run are in {self.args.output_dir}; push them later with "
                f"`hf upload {repo} {self.args.output_dir}`."
            ) from err

    def create_model_card(self, text=None, **_):
        """Write the model card as README.md: `text`, the run's final card (`push_to_hub(text=...)` passes it here),
        else `model_card()`, the card of a checkpoint pushed during training. The Trainer's own card arguments
        (`model_name`, `tags`) do not apply."""
        if self.is_world_process_zero():
            card = self.model_card() if text is None else text
            write_atomically(os.path.join(self.args.output_dir, "README.md"), card.encode("utf-8"))
