"""The conformance cases (tests/conformance/) through the Python runtime.

Every case in the folder runs here: a bad manifest must be refused by `Pipeline.load` with the
case's error class and sentence (and by `bld sample` with that line), a bad request by
`Pipeline.generate`, a bad command line by `bld sample`, and a good request must give the case's
bits and pixels. tests/test_cpp_runtime.py runs the same cases through the C++
runtime, so a rule both runtimes keep is one case added to a JSON file.
"""

from __future__ import annotations

import conformance
import pytest
from click.testing import CliRunner

from bld_runtime.cli import cli
from bld_runtime.errors import BldError
from bld_runtime.pipeline import Pipeline

MANIFESTS = conformance.cases("manifests")
REQUESTS = conformance.cases("requests")
GENERATIONS = conformance.cases("generations")
COMMANDS = conformance.cases("commands")


def names(cases):
    return [case["name"] for case in cases]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def refused(case, call) -> None:
    with pytest.raises(BldError) as caught:
        call()
    error = caught.value
    assert (type(error).__name__, str(error)) == (case["error"]["kind"], case["expected"])


@pytest.mark.parametrize("case", MANIFESTS, ids=names(MANIFESTS))
def test_bad_manifests(tiny_bundle, tmp_path, case):
    bundle = conformance.broken_bundle(tiny_bundle, tmp_path, case)
    expected = conformance.expected_message(case, bundle)
    refused(dict(case, expected=expected), lambda: Pipeline.load(bundle))
    assert bld_sample(bundle, [], tmp_path / "out") == conformance.one_line(expected)


def bld_sample(bundle, args, out) -> str:
    """`bld sample BUNDLE ARGS -o OUT`, refused: its stderr (OUT not made)."""
    result = CliRunner().invoke(cli, ["sample", str(bundle), *args, "-o", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert not out.exists()
    return result.stderr


@pytest.mark.parametrize("case", COMMANDS, ids=names(COMMANDS))
def test_bad_command_lines(tiny_bundle, tmp_path, case):
    assert bld_sample(tiny_bundle, case["args"], tmp_path / "out") == case["error"] + "\n"


@pytest.mark.parametrize("case", REQUESTS, ids=names(REQUESTS))
def test_bad_requests(pipe, case):
    arguments = conformance.python_arguments(case["request"])
    refused(dict(case, expected=case["error"]["message"]), lambda: pipe.generate(**arguments))


@pytest.mark.parametrize("case", GENERATIONS, ids=names(GENERATIONS))
def test_generations(tiny_bundle, pipe, case):
    if conformance.fingerprint(tiny_bundle) != conformance.generations_bundle():
        pytest.skip("the tiny bundle's graphs differ from those generations.json was made on")
    result = pipe.generate(**conformance.python_arguments(case["request"]))
    assert conformance.sha256(result.bits) == case["bits_sha256"]
    assert conformance.sha256(result.images) == case["images_sha256"]


def test_the_cases_are_well_formed():
    """Every case has a unique name, a known error kind, and only the keys README.md lists."""
    edits = {"set", "delete", "append", "copy_graph", "text", "replace", "append_text"}
    files = {"remove", "flip_byte", "move_outside", "graph_facts"}
    for case in MANIFESTS:
        assert set(case) <= {"name", "same_as", "error"} | edits | files, case["name"]
    for case in REQUESTS + GENERATIONS:
        assert set(case) <= {"name", "request", "error", "bits_sha256", "images_sha256"}
        assert set(case["request"]) <= {
            "seeds",
            "classes",
            "guidance",
            "temperature",
            "mask",
            "known_bits",
            "chunk",
        }, case["name"]
    for case in MANIFESTS + REQUESTS:
        assert case["error"]["kind"] in conformance.KINDS, case["name"]
    for case in COMMANDS:
        assert set(case) == {"name", "args", "error"} and case["error"].startswith("error: ")
    assert len(MANIFESTS) >= 90 and len(REQUESTS) >= 20 and len(GENERATIONS) >= 10
    assert len(COMMANDS) >= 40


def test_every_rule_reads_differently():
    """Each change of bld.json's content (not of its JSON syntax, whose words are Python's json
    module's) is refused in its own sentence, unless the case says which it repeats on purpose
    (`same_as`: one check comes before another), and the kinds of problem read differently, not
    only the paths."""
    content = [c for c in MANIFESTS if not {"text", "replace", "append_text"} & set(c)]
    by_name = {case["name"]: case for case in MANIFESTS}
    seen: dict[str, str] = {}
    for case in content:
        message = case["error"]["message"]
        if "same_as" in case:
            assert by_name[case["same_as"]]["error"] == case["error"], case["name"]
            continue
        assert message not in seen, f"{case['name']} reads as {seen.get(message)}"
        seen[message] = case["name"]
    kinds = {message.split(": ", 2)[-1].split(" ")[0] for message in seen}
    assert len(seen) >= 60 and len(kinds) > 10
