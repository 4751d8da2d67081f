"""Run a module as __main__ under an address-space cap; at exit, write the process's own peak
resident set (VmHWM) to a file.

    python peak_rss.py OUT_FILE CAP_BYTES bld_runtime.cli sample ...

Measured from inside: a parent's rusage of a child counts the pages the child shared with the
parent between fork and exec, which for a test runner holding torch is most of a gigabyte.
"""

import atexit
import resource
import runpy
import sys

out, cap, module, *args = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))


def report() -> None:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(f"{int(peak) * 1024}\n")


atexit.register(report)
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
