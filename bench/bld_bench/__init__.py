"""bld_bench: `bld bench`, the runtime's sampling loop timed stage by stage beside PyTorch.

A deployment needs none of this, so it lives outside bld_runtime: `core` (requests, timed
backends, interleaved rounds, the report), `machine` (memory and the GEMM peak), `report` (table
and plot) and `cli` (the `bld bench` command, added to `bld` through an entry point).
"""

# Idle time before each timed run (`bld bench --idle`), so that one contender's threads go quiet.
IDLE_SECONDS = 0.1
