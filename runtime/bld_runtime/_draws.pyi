# The compiled draws (csrc/draws.c); arrays are C-contiguous, shapes checked by the caller.
from typing import Any

def draw(
    p: Any, seeds: Any, subsequence: int, n: int, bits: Any, keep: Any, known: Any, /
) -> None: ...
def threshold(p: Any, batch: int, n: int, bits: Any, keep: Any, known: Any, /) -> None: ...
