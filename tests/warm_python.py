"""Python scripts run as `python script.py args...` or `python -c code args...` would run them, in a process forked
from one that has imported the heavy libraries already.

The suite runs some seventy scripts in processes of their own (the run scripts, the benches, the fixtures' training),
and each fresh interpreter spends ~6 s of a 2-core machine importing torch, transformers and datasets before it does
anything. A multiprocessing fork server imports them once (`PRELOAD`) and forks a child per script, which then runs
the script from a clean slate of its own: its argv, working folder, `sys.path` as Python sets it for a script, its
output in a file, its exit status; nothing of it returns to the server. Only the libraries are shared, never this
project's modules (a model folder's remote code registers classes process-wide when imported).

The server's environment is fixed when it starts, and some libraries read theirs at import (huggingface_hub's
endpoint and offline flags), so `run` serves only commands whose environment is the server's; `conftest.run_script`
runs any other in a fresh interpreter.
"""

import atexit
import builtins
import json
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import subprocess
import sys
import traceback

PRELOAD = ("numpy", "pyarrow", "torch", "datasets", "transformers", "transformers.trainer", "accelerate")


class WarmPython:
    """A fork server for Python scripts, started with `environment` (a dict) on the first `run`."""

    def __init__(self, environment):
        self.environment = dict(environment)
        self.context = None
        self.plain_path = None

    def serves(self, command, environment):
        """Whether `command` (an argv list) is `python script.py ...` or `python -c code ...` of this interpreter,
        to run in the server's `environment`."""
        return (len(command) >= 2 and command[0] == sys.executable and dict(environment) == self.environment
                and (command[1] == "-c" and len(command) >= 3 or str(command[1]).endswith(".py")))

    def start(self):
        """The fork server, started in the server's environment with `PRELOAD` imported (once)."""
        if self.context is None:
            fresh = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                                   env=self.environment, stdout=subprocess.PIPE, text=True, check=True)
            self.plain_path = json.loads(fresh.stdout)
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(self.environment)
            try:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(list(PRELOAD))
                multiprocessing.forkserver.ensure_running()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            self.context = context
        return self.context

    def run(self, command, cwd, stdout, stderr):
        """The exit status of `command` (`serves`) run in `cwd` by a child of the server, its stdout and stderr
        written to the files `stdout` and `stderr` (the same path: both in one file, as they come)."""
        child = self.start().Process(target=run_script, args=([str(c) for c in command[1:]], str(cwd),
                                                              (str(stdout), str(stderr)), self.plain_path))
        child.start()
        child.join()
        return child.exitcode


def exit_status(code):
    """The status `sys.exit(code)` ends a Python process with (a message is printed to stderr)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def run_script(argv, cwd, outputs, plain_path):
    """In a forked child: run `argv` (["-c", code, args...] or [script.py, args...]) as `python` would, in `cwd`,
    its stdout and stderr to the files `outputs` (two paths, maybe the same); then end the process with the script's
    exit status, after the exit handlers an interpreter runs at its end."""
    descriptors = {path: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) for path in set(outputs)}
    for stream, path in enumerate(outputs, start=1):
        os.dup2(descriptors[path], stream)
    for descriptor in descriptors.values():
        os.close(descriptor)
    os.chdir(cwd)
    status = 0
    try:
        if argv[0] == "-c":
            sys.argv, sys.path[:] = ["-c", *argv[2:]], ["", *plain_path]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
        else:
            sys.argv, sys.path[:] = argv, [os.path.dirname(os.path.abspath(argv[0])), *plain_path]
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as end:
        status = exit_status(end.code)
    except BaseException:  # noqa: B036 - as the interpreter reports an uncaught exception
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
