"""Make generations.json's hashes from the Python runtime: `cd tests && python -m conformance
BUNDLE` (the tiny bundle: `tiny_bundle` in tests/conftest.py, e.g. $BLD_TEST_CACHE/tiny_bundle/
bundle). Every generation case gets the sha256 of its bits and pixels, and the file records
BUNDLE's graphs. Run it after adding a generation case, or after a change to training or export
that changes the tiny bundle on purpose; then check that the C++ runtime agrees
(tests/test_cpp_runtime.py). Error cases are written by hand: their sentence is the rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bld_runtime.pipeline import Pipeline

from . import FOLDER, fingerprint, python_arguments, sha256, write_cases


def main(bundle: Path) -> None:
    pipe = Pipeline.load(bundle)
    data = json.loads((FOLDER / "generations.json").read_text())
    data["bundle"] = fingerprint(bundle)
    for case in data["cases"]:
        result = pipe.generate(**python_arguments(case["request"]))
        case["bits_sha256"], case["images_sha256"] = sha256(result.bits), sha256(result.images)
    write_cases("generations", data)
    print(f"generations.json: {len(data['cases'])} cases, made on {bundle}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m conformance BUNDLE")
    main(Path(sys.argv[1]))
