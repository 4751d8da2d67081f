"""Run a module as __main__ and SIGKILL this very process at the N-th call of a function.

    python crash_at.py os.replace 3 before bld_export.cli onnx RUN -o OUT --force

(a module name, or the path of a script). `os.replace~TEXT` counts only the calls with an
argument that is, or ends with, the path TEXT.
kills the exporter just before its third os.replace: the way a power cut or `kill -9` stops a
program, with no chance to clean up. `after` kills right after the call returned. Test tooling
only: the product has no crash hooks.
"""

import importlib
import os
import runpy
import signal
import sys


def main() -> None:
    target, count, when, module, *args = sys.argv[1:]
    # `after:INT` (or any signal's name) sends that signal instead of SIGKILL: a stop that
    # lands at an exact point.
    when, _, name = when.partition(":")
    number = getattr(signal, f"SIG{name}") if name else signal.SIGKILL
    target, _, only = target.partition("~")
    owner_name, attribute = target.rsplit(".", 1)
    owner = importlib.import_module(owner_name)
    real = getattr(owner, attribute)
    calls = 0

    def crashing(*a, **k):
        nonlocal calls
        if only and not any(str(arg).endswith(only) for arg in a):
            return real(*a, **k)
        calls += 1
        if calls == int(count) and when == "before":
            os.kill(os.getpid(), number)
        result = real(*a, **k)
        if calls == int(count) and when == "after":
            os.kill(os.getpid(), number)
        return result

    setattr(owner, attribute, crashing)
    sys.argv = [module, *args]
    if module.endswith(".py"):
        runpy.run_path(module, run_name="__main__")
    else:
        runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
