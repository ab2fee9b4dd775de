"""The tests' `tubelet` launcher (tests/conftest.py: run_tubelet): a process that has imported
what every command imports (torch, the tasks, torchmetrics: ~5 CPU-s a start) and forks one
child per command. The child is a real process of its own (its pid, exit code, signals, locks,
files), set up as `python -m MODULE ARGS` in CWD with ENV would be (sys.argv, sys.path,
os.environ, stdio, what the imports printed), then it runs MODULE as __main__ (tubelet.cli, or
torch.distributed.run for torchrun's agent) and leaves through the normal interpreter exit
(atexit, flushing). What it skips is the interpreter start and the imports.

Protocol, one JSON line per message on stdin/stdout: a request {"module", "args", "cwd", "env",
"stdout", "stderr"} (the last two: files for the child's output) is answered by {"pid"} at the
fork and {"code", "cpu"} when the child ends (code as subprocess reports it: -N for signal N;
cpu: the child's user+system seconds, its own children included). One command at a time; an
empty line or EOF ends the server.
"""
from __future__ import annotations

import gc
import io
import json
import os
import runpy
import sys
import tempfile


def serve(channel_in, channel_out) -> dict:
    """Answers requests until EOF (then exits); returns, in a forked child only, its request."""
    while True:
        line = channel_in.readline()
        if not line.strip():
            os._exit(0)
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return request
        channel_out.write(json.dumps({"pid": pid}) + "\n")
        channel_out.flush()
        _, status, usage = os.wait4(pid, 0)
        channel_out.write(json.dumps({"code": os.waitstatus_to_exitcode(status),
                                      "cpu": usage.ru_utime + usage.ru_stime}) + "\n")
        channel_out.flush()


def become(request: dict, base_path: list[str]) -> None:
    """This forked child as `python -m MODULE ARGS` would start: cwd, environment, the module
    search path (cwd, then PYTHONPATH, then the installation's), argv, stdio."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]
    sys.argv = [request["module"], *request["args"]]  # [0]: run_module sets the file
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    encoding = sys.stdout.encoding

    def stream(fd: int, mode: str, errors: str):
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = raw if unbuffered and mode == "w" else \
            (io.BufferedWriter(raw) if mode == "w" else io.BufferedReader(raw))
        return io.TextIOWrapper(buffered, encoding=encoding, errors=errors,
                                write_through=unbuffered, line_buffering=fd == 2)

    sys.stdin = sys.__stdin__ = stream(0, "r", "strict")
    sys.stdout = sys.__stdout__ = stream(1, "w", "strict")
    sys.stderr = sys.__stderr__ = stream(2, "w", "backslashreplace")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base = [p for p in sys.path if p != here and p not in own]
    channel_in = io.TextIOWrapper(io.FileIO(os.dup(0), "r"), encoding="utf-8")
    channel_out = io.TextIOWrapper(io.FileIO(os.dup(1), "w"), encoding="utf-8")
    # what the imports print (a warning, say) is printed again by every child, as each new
    # interpreter would print it
    said = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    log = os.dup(2)
    for fd, file in said.items():
        os.dup2(file.fileno(), fd)
    import tubelet.build  # noqa: F401  (what every command imports)
    import tubelet.cli  # noqa: F401
    import tubelet.engine.trainer  # noqa: F401
    import torch._dynamo  # noqa: F401  (a run's first optimizer step imports it: 1.2 CPU-s)
    import torch.distributed.run  # noqa: F401  (torchrun's agent)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 2)
    os.close(log)
    for file in said.values():
        file.seek(0)
    said = {fd: file.read() for fd, file in said.items()}
    # the imported objects outlive every child: out of the collector's reach, a child's exit
    # does not write to (copy) their pages (measured: 1.1 -> 0.4 CPU-s per child)
    gc.freeze()
    request = serve(channel_in, channel_out)
    channel_in.close()  # the child's copies of the channel
    channel_out.close()
    become(request, base)
    for fd, text in said.items():
        os.write(fd, text)
    # as `python -m` finds it: not imported yet (else runpy warns on stderr)
    sys.modules.pop(request["module"], None)
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
