"""Generation requests through the Python runtime, written as bld-probe writes them.

    python probe_py.py BUNDLE SPEC.json OUTDIR

SPEC is bld-probe's (runtime/cpp/tests/probe.cpp): {"options": {"precision": ...},
"requests": [{"name", "seeds", "classes", "guidance", "temperature", "trace"}]}. For each
request OUTDIR gets NAME.bits.npy, NAME.images.npy and with trace NAME.states.npy and
NAME.probs.npy, or NAME.error ("CLASS MESSAGE"). Run by the x86 and the arm64 interpreters
alike (scripts/arm64/arm64.py); it needs only the runtime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bld_runtime.errors import BldError
from bld_runtime.pipeline import Pipeline


def values(request: dict, key: str):
    v = [float(x) for x in request.get(key, [])]
    return None if not v else v[0] if len(v) == 1 else v


def main(bundle: str, spec_path: str, out: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.load(bundle, **spec.get("options", {}))
    for request in spec["requests"]:
        name = request["name"]
        classes = request.get("classes") or None
        try:
            result = pipe.generate(
                seeds=np.array(request["seeds"], np.uint64),
                classes=classes[0] if classes and len(classes) == 1 else classes,
                guidance=values(request, "guidance"),
                temperature=values(request, "temperature"),
                trace=request.get("trace", False),
            )
        except BldError as e:
            (folder / f"{name}.error").write_text(f"{type(e).__name__} {e}")
            continue
        np.save(folder / f"{name}.bits.npy", result.bits)
        np.save(folder / f"{name}.images.npy", result.images)
        if result.trace is not None:
            np.save(folder / f"{name}.states.npy", result.trace.states)
            np.save(folder / f"{name}.probs.npy", result.trace.probs)


if __name__ == "__main__":
    main(*sys.argv[1:4])
