"""What a model folder carries (`model_folder/`): the files every folder gets are the pipeline's imports and the
handler, and those modules import each other relatively and nothing else of the project, so a folder missing one
fails to load instead of running this project's copy."""

import ast
import importlib
import shutil
import sys

import pytest
from transformers.dynamic_module_utils import get_relative_import_files

from model_folder import FOLDER, PIPELINE_FILES
from tests.conftest import ROOT

PROJECT_MODULES = {path.stem for path in ROOT.glob("*.py")} | {"model_folder", "metrics", "tests", "bench"}


def imports(path):
    """(module, level) of every import statement in `path`, and whether a relative one sits in a try block (a
    fallback to another module when the folder lacks it)."""
    tree = ast.parse(path.read_text())
    found = [(node.module if isinstance(node, ast.ImportFrom) else alias.name, getattr(node, "level", 0))
             for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names]
    guarded = any(isinstance(child, ast.ImportFrom) and child.level > 0 for node in ast.walk(tree)
                  if isinstance(node, ast.Try) for child in ast.walk(node))
    return found, guarded


@pytest.mark.parametrize("path", sorted(FOLDER.glob("*.py")), ids=lambda path: path.name)
def test_the_folders_modules_import_the_project_relatively_only_and_never_conditionally(path):
    found, guarded = imports(path)
    absolute = {module.split(".")[0] for module, level in found if level == 0}
    assert not absolute & PROJECT_MODULES, f"{path.name} imports {absolute & PROJECT_MODULES} absolutely"
    assert not guarded, f"{path.name} imports a module of its folder inside a try block (a fallback)"


def test_every_folder_carries_the_pipeline_its_imports_and_the_handler():
    pipeline = FOLDER / "qa_pipeline.py"
    expected = {pipeline, *map(type(pipeline), get_relative_import_files(str(pipeline))), FOLDER / "handler.py"}
    assert set(PIPELINE_FILES) == expected


def test_a_module_without_its_sibling_fails_to_import_even_beside_the_project(tmp_path, monkeypatch):
    """As in a folder whose loader copied the pipeline's direct imports only (transformers 4 does): qa_decoding.py
    without span_decoding.py, in a process where the project's own span_decoding is importable too."""
    package = tmp_path / "folder_copy"
    package.mkdir()
    (package / "__init__.py").touch()
    shutil.copy(FOLDER / "qa_decoding.py", package)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(FOLDER))  # the project's span_decoding.py, importable absolutely
    assert importlib.util.find_spec("span_decoding") is not None
    with pytest.raises(ImportError, match="span_decoding"):
        importlib.import_module("folder_copy.qa_decoding")
    sys.modules.pop("folder_copy", None)


def test_a_saved_folder_missing_a_module_fails_to_load_naming_it(learned, tmp_path):
    from transformers import pipeline

    folder = tmp_path / "incomplete"
    shutil.copytree(learned["span"], folder)
    (folder / "span_decoding.py").unlink()
    with pytest.raises(OSError, match="span_decoding.py"):
        pipeline("question-answering", model=str(folder), trust_remote_code=True)
