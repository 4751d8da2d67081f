"""The conformance cases (README.md in this folder): reading them and applying them.

Both runtimes' tests use this module: tests/test_conformance.py runs every case through the
Python runtime, tests/test_cpp_runtime.py through the C++ runtime (bld-probe and bld-cpp). It
only turns a case into a bundle on disk or into a request; what the answer must be is in the
JSON files, never here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = Path(__file__).resolve().parent

# bld.h's bld_error_kind, by the Python error class each one mirrors
KINDS = {
    "ContractError": 1,
    "ManifestError": 2,
    "BundleIntegrityError": 3,
    "InvalidRequestError": 4,
    "BackendUnavailableError": 5,
    "PackedBitsError": 6,
    "CancelledError": 7,
}


def cases(kind: str) -> list[dict[str, Any]]:
    """The cases of `kind` ("manifests", "requests", "generations", "commands"), in order."""
    data = json.loads((FOLDER / f"{kind}.json").read_text())
    found = data["cases"]
    names = [case["name"] for case in found]
    assert len(set(names)) == len(names), f"{kind}.json: duplicate case names"
    return found


def write_cases(kind: str, data: dict[str, Any]) -> None:
    """Write `kind`.json as these files are laid out: its other keys, then one case a line."""
    head = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in data.items()]
    del head[list(data).index("cases")]
    body = ",\n".join(f"    {json.dumps(case)}" for case in data["cases"])
    text = "\n".join(["{", *head, '  "cases": [', body, "  ]", "}"])
    (FOLDER / f"{kind}.json").write_text(text + "\n")


def fingerprint(bundle: Path) -> dict[str, str]:
    """The graphs' sha256 a bundle's manifest records: what generations.json was made on."""
    graphs = json.loads((bundle / "bld.json").read_text())["graphs"]
    return {name: graph["sha256"] for name, graph in sorted(graphs.items())}


def generations_bundle() -> dict[str, str]:
    return json.loads((FOLDER / "generations.json").read_text())["bundle"]


# --- manifests: a valid bundle changed -----------------------------------------------------


def _node(data, path):
    for key in path[:-1]:
        data = data[key]
    return data


def _edit_json(bundle: Path, case: dict) -> None:
    if not any(key in case for key in ("set", "delete", "append", "copy_graph")):
        return
    path = bundle / "bld.json"
    data = json.loads(path.read_text())
    for where, value in case.get("set", []):
        _node(data, where)[where[-1]] = value
    for where in case.get("delete", []):
        del _node(data, where)[where[-1]]
    for where, value in case.get("append", []):
        node = _node(data, where)[where[-1]]
        node.append(node[value] if isinstance(value, int) else value)
    for graph, source in case.get("copy_graph", []):
        data["graphs"][graph] = data["graphs"][source]
    path.write_text(json.dumps(data, indent=2))


def _rewrite_facts(bundle: Path, name: str, facts_set) -> None:
    """Change what graph `name` records in its bld.graph metadata (None: drop it), and update
    its sha256 in bld.json, so that only the facts disagree."""
    import onnx

    path = bundle / f"{name}.onnx"
    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key == "bld.graph"]
    if facts_set is None:
        model.metadata_props.remove(props[0])
    else:
        facts = json.loads(props[0].value)
        for where, value in facts_set:
            _node(facts, where)[where[-1]] = value
        props[0].value = json.dumps(facts)
    onnx.save(model, str(path))
    data = json.loads((bundle / "bld.json").read_text())
    data["graphs"][name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle / "bld.json").write_text(json.dumps(data, indent=2))


def broken_bundle(tiny_bundle: Path, where: Path, case: dict) -> Path:
    """A copy of `tiny_bundle` in `where`/bundle changed as `case` says (README.md)."""
    bundle = where / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = bundle / "bld.json"
    if "text" in case:
        manifest.write_text("".join(part * count for part, count in case["text"]), "utf-8")
    _edit_json(bundle, case)
    for old, new in case.get("replace", []):
        text = manifest.read_text("utf-8")
        assert old in text, f"{case['name']}: {old!r} is not in bld.json"
        manifest.write_text(text.replace(old, new), "utf-8")
    for part, count in case.get("append_text", []):
        manifest.write_text(manifest.read_text("utf-8") + part * count, "utf-8")
    for name in case.get("remove", []):
        (bundle / name).unlink()
    for name in case.get("flip_byte", []):
        data = bytearray((bundle / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bundle / name).write_bytes(bytes(data))
    for name in case.get("move_outside", []):
        outside = where / "outside"
        outside.mkdir(exist_ok=True)
        shutil.move(bundle / name, outside / name)
        (bundle / name).symlink_to(outside / name)
    for name, facts_set in case.get("graph_facts", {}).items():
        _rewrite_facts(bundle, name, facts_set)
    return bundle


def expected_message(case: dict, bundle: Path) -> str:
    """The case's sentence with its placeholders filled in for `bundle` (README.md)."""
    message = case["error"]["message"]
    if "_sha256:" in message:  # only a manifest that parses names its graphs' hashes
        graphs = json.loads((bundle / "bld.json").read_text())["graphs"]
        for name, graph in graphs.items():
            message = message.replace(f"{{manifest_sha256:{name}}}", graph["sha256"])
            if f"{{file_sha256:{name}}}" in message:
                actual = hashlib.sha256((bundle / graph["file"]).read_bytes()).hexdigest()
                message = message.replace(f"{{file_sha256:{name}}}", actual)
    message = message.replace("{outside}", str((bundle.parent / "outside").resolve()))
    return message.replace("{bundle}", str(bundle))


# --- requests --------------------------------------------------------------------------------


def _array(spec: dict) -> np.ndarray:
    """{"shape": [...], "value": v} or {"shape": [...], "random": seed} (0/1, numpy's PCG64)."""
    if "random" in spec:
        rng = np.random.default_rng(spec["random"])
        return rng.integers(0, 2, spec["shape"], dtype=np.uint8)
    return np.full(spec["shape"], spec["value"], np.uint8)


def _number(value):
    return float(value) if isinstance(value, str) else value  # "nan", "inf": not JSON numbers


def python_arguments(request: dict) -> dict[str, Any]:
    """The keyword arguments of Pipeline.generate for a case's request."""
    args: dict[str, Any] = {"seeds": np.array(request["seeds"], np.uint64)}
    if "classes" in request:
        args["classes"] = request["classes"]
    for key in ("guidance", "temperature"):
        if key in request:
            value = request[key]
            args[key] = [_number(v) for v in value] if isinstance(value, list) else _number(value)
    for key in ("mask", "known_bits"):
        if key in request:
            args[key] = _array(request[key])
    if "chunk" in request:
        args["chunk"] = request["chunk"]
    return args


def probe_request(name: str, request: dict) -> dict[str, Any]:
    """The case's request as bld-probe reads it (runtime/cpp/tests/probe.cpp): one value in a
    list is for all images, numbers may be strings, arrays are flat with mask_shape."""
    out: dict[str, Any] = {"name": name, "seeds": request["seeds"]}
    if request.get("classes") is not None:
        classes = request["classes"]
        out["classes"] = classes if isinstance(classes, list) else [classes]
    for key in ("guidance", "temperature"):
        if key in request:
            value = request[key]
            out[key] = value if isinstance(value, list) else [value]
    shapes = set()
    for key in ("mask", "known_bits"):
        if key in request:
            array = _array(request[key])
            out[key] = array.ravel().tolist()
            shapes.add(tuple(array.shape))
    if shapes:
        assert len(shapes) == 1, f"{name}: bld-probe takes mask and known_bits of one shape"
        (shape,) = shapes
        out["mask_shape"] = list(shape) if len(shape) == 3 else [1, *shape]
    if "chunk" in request:
        out["chunk"] = request["chunk"]
    return out


def one_line(message: str) -> str:
    """A message as both command lines print it: `error: `, its whitespace collapsed."""
    return f"error: {' '.join(message.split())}\n"


def sha256(array: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (uint8 bits 0/1, uint8 pixels)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
