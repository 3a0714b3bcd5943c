"""Python scripts run as `python script.py args...`, `python -c code args...` or `python -m module args...` would run
them, in a process forked from one that has imported the heavy libraries already.

The suite runs some seventy scripts in processes of their own (the run scripts, the benches, the fixtures' training),
and each fresh interpreter spends ~6 s of a 2-core machine importing torch, transformers and datasets before it does
anything. A multiprocessing fork server imports them once (`PRELOAD`) and forks a child per script, which then runs
the script from a clean slate of its own: its argv, working folder, environment, `sys.path` as Python sets it for a
script, its standard streams, its exit status; nothing of it returns to the server. Only the libraries are shared,
never this project's modules (a model folder's remote code registers classes process-wide when imported).

The server's environment is fixed when it starts, and some libraries read theirs at import (huggingface_hub's
endpoint and offline flags), so `run` serves only commands whose environment is the server's, give or take variables
no library reads at import (a shell script's own settings); `conftest.run_script` runs any other in a fresh
interpreter. Shell scripts reach the server through `python_command`: an executable that stands in for the
interpreter, sends its command, working folder, environment and standard streams to a thread of the server's owner,
and runs the real interpreter itself where the server cannot serve the command.
"""

import atexit
import builtins
import json
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.reduction
import os
import runpy
import socket
import subprocess
import sys
import tempfile
import threading
import traceback

PRELOAD = ("numpy", "pyarrow", "torch", "datasets", "transformers", "transformers.trainer", "accelerate")
# Variables a shell sets for itself, whatever its parent's were.
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_"}
# Variables read when Python or the preloaded libraries start, but for those a child honours itself (PYTHON is the
# project scripts' own setting: the interpreter they run).
READ_AT_START = ("PYTHON", "LD_", "HF_", "HUGGINGFACE", "TRANSFORMERS", "DATASETS", "TORCH", "PYTORCH", "CUDA",
                 "OMP_", "MKL_", "KMP_", "ACCELERATE", "TOKENIZERS", "NUMPY", "ARROW")
HONOURED = {"PYTHON", "PYTHONUNBUFFERED"}


class WarmPython:
    """A fork server for Python scripts, started with `environment` (a dict) on the first `run`."""

    def __init__(self, environment):
        self.environment = dict(environment)
        self.context = None
        self.plain_path = None
        self.command = None
        self.starting = threading.Lock()

    def serves(self, command, environment):
        """Whether `command` (an argv list) is `python script.py ...`, `python -c code ...` or `python -m module
        ...` of this interpreter, in an `environment` the server's imports hold for: the server's own, maybe with
        variables read later added."""
        return (len(command) >= 2 and command[0] == sys.executable and self.holds_for(environment)
                and (command[1] in ("-c", "-m") and len(command) >= 3 or str(command[1]).endswith(".py")))

    def holds_for(self, environment):
        """Whether the server's imports hold in `environment`: every variable of the server's the same (but those a
        shell sets for itself), and no variable added that Python or a preloaded library reads as it starts."""
        own, given = ({key: value for key, value in variables.items() if key not in SHELL_OWN}
                      for variables in (self.environment, environment))
        added = given.keys() - own.keys()
        return (all(given.get(key) == value for key, value in own.items())
                and not any(key.startswith(READ_AT_START) and key not in HONOURED for key in added))

    def start(self):
        """The fork server, started in the server's environment with `PRELOAD` imported (once)."""
        with self.starting:
            if self.context is None:
                self.context = self.started()
        return self.context

    def started(self):
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
        return context

    def run(self, command, cwd, streams, environment):
        """The exit status of `command` (`serves`) run in `cwd` and `environment` by a child of the server, its
        standard streams `streams`: (number, file) pairs, a file being a path to write (stdout and stderr may share
        one: both in one file, as they come) or an open descriptor of this process."""
        # a descriptor reaches the child through multiprocessing's resource sharer
        streams = [(number, str(target) if isinstance(target, (str, os.PathLike)) else
                    multiprocessing.reduction.DupFd(target)) for number, target in streams]
        child = self.start().Process(target=run_script, args=([str(c) for c in command[1:]], str(cwd), streams,
                                                              self.plain_path, environment))
        child.start()
        child.join()
        return child.exitcode if child.exitcode >= 0 else 128 - child.exitcode

    def python_command(self):
        """The path of an executable that runs `python ...` as this interpreter would, through the server where it
        `serves` the command in the caller's environment (for shell scripts that take their interpreter from a
        variable); made once, with the thread that answers it."""
        if self.command is None:
            folder = tempfile.mkdtemp(prefix="warm-python-")
            address = os.path.join(folder, "socket")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen()
            threading.Thread(target=self.answer_all, args=(listener,), daemon=True).start()
            self.command = os.path.join(folder, "python")
            with open(self.command, "w", encoding="utf-8") as f:
                f.write(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                        f"from warm_python import forward\nforward({address!r}, {sys.executable!r})\n")
            os.chmod(self.command, 0o755)
        return self.command

    def answer_all(self, listener):
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection):
        """Run the command `forward` sent on `connection` and reply with its exit status, or "no" where the server
        does not serve it."""
        with connection:
            message, descriptors, _, _ = socket.recv_fds(connection, 1 << 16, 3)
            size = int.from_bytes(message[:8], "big")
            while len(message) < 8 + size:
                message += connection.recv(1 << 16)
            request = json.loads(message[8:])
            try:
                command = [sys.executable, *request["argv"]]
                if not self.serves(command, request["environment"]):
                    connection.sendall(b"no\n")
                    return
                status = self.run(command, request["cwd"], enumerate(descriptors), request["environment"])
                connection.sendall(f"{status}\n".encode())
            finally:
                for descriptor in descriptors:
                    os.close(descriptor)


def forward(address, python):
    """Run this process's command, `python` with its arguments, through the server listening at `address`, and
    exit with its status; run `python` itself where the server does not serve the command."""
    request = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "environment": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(address)
        socket.send_fds(connection, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
        reply = connection.makefile().readline().strip()
    if reply == "no":
        os.execv(python, [python, *sys.argv[1:]])
    sys.exit(int(reply))


def exit_status(code):
    """The status `sys.exit(code)` ends a Python process with (a message is printed to stderr)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def run_script(argv, cwd, streams, plain_path, environment):
    """In a forked child: run `argv` (["-c", code, args...], ["-m", module, args...] or [script.py, args...]) as
    `python` would, in `cwd` and `environment`, its standard streams `streams` ((number, file): a path to write,
    maybe twice, or a DupFd of an open descriptor); then end the process with the script's exit status, after the
    exit handlers an interpreter runs at its end."""
    opened = {}
    for number, target in streams:
        if isinstance(target, str):
            if target not in opened:
                opened[target] = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(opened[target], number)
        else:
            descriptor = target.detach()
            os.dup2(descriptor, number)
            os.close(descriptor)
    for descriptor in opened.values():
        os.close(descriptor)
    if any(number == 0 for number, _ in streams):  # multiprocessing gave the child /dev/null as sys.stdin
        sys.stdin = open(0, encoding=sys.stdout.encoding, closefd=False)
    os.environ.clear()
    os.environ.update(environment)
    if environment.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    os.chdir(cwd)
    status = 0
    try:
        if argv[0] == "-c":
            sys.argv, sys.path[:] = ["-c", *argv[2:]], ["", *plain_path]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
        elif argv[0] == "-m":
            sys.argv, sys.path[:] = [argv[1], *argv[2:]], [os.getcwd(), *plain_path]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[:] = argv, [os.path.dirname(os.path.abspath(argv[0])), *plain_path]
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as end:
        status = exit_status(end.code)
    except BaseException:  # noqa: B036 - as the interpreter reports an uncaught exception
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if not stream.closed:  # a script may close them (json.tool closes stdout)
            stream.flush()
    os._exit(status)
