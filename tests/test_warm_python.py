"""The tests' warm interpreter (tests/warm_python.py) as shell scripts reach it: $PYTHON runs each command as a fresh
`python` would (arguments, working folder, environment, standard streams, exit status), forked from the server
where its environment allows, else started afresh."""

import subprocess

from tests.conftest import ROOT, shell_env

SCRIPT = r"""
set -u
cd "$FOLDER"
echo "sum: $($PYTHON -c 'print(41 + 1)')"
$PYTHON -c 'import os, sys; print(os.getcwd(), os.environ["ADDED"], sys.argv[1:])
print("to stderr", file=sys.stderr)' a 'b c'
echo "read: $(echo hello | $PYTHON -c 'import sys; print(sys.stdin.read().strip().upper())')"
$PYTHON -c 'import sys; sys.exit(3)'; echo "status $?"
$PYTHON -c 'raise ValueError("boom")' 2>/dev/null; echo "status $?"
$PYTHON script.py; echo "status $?"
$PYTHON -c 'import sys; print("warm:", "torch" in sys.modules)'
HF_ENDPOINT=http://127.0.0.1:9 $PYTHON -c 'import sys; print("warm:", "torch" in sys.modules)'
$PYTHON -m json.tool <<< '{"module": 1}'
PYTHONUNBUFFERED=1 $PYTHON -c 'import sys; print("warm:", "torch" in sys.modules, sys.stdout.write_through)'
"""


def test_python_stand_in_runs_commands_as_python_would_warm_where_the_environment_allows(tmp_path):
    (tmp_path / "script.py").write_text("import sys\nprint('script', sys.path[0])\nsys.exit('a message')\n")
    result = subprocess.run(["bash", "-c", SCRIPT], cwd=ROOT, env=shell_env(FOLDER=str(tmp_path), ADDED="yes"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sum: 42", f"{tmp_path} yes ['a', 'b c']", "read: HELLO", "status 3", "status 1",
        f"script {tmp_path}", "status 1",
        "warm: True",  # forked from the server, which imported torch
        "warm: False",  # HF_ENDPOINT is read at import: a fresh interpreter
        '{', '    "module": 1', '}',  # a module run warm, as -m runs it
        "warm: True True"]  # PYTHONUNBUFFERED honoured
    assert result.stderr.splitlines() == ["to stderr", "a message"], result.stderr
