"""The bundle manifest bld.json: typed, frozen dataclasses and a strict loader (bundle format v1).

One generic parser walks the dataclasses' type hints, so the Python types below ARE the schema:
unknown keys, missing keys and wrong types are rejected with a path-qualified message such as
`bld.json: graphs.step.inputs[0]: unknown key 'foo'`. Each dataclass checks its own invariants
in __post_init__ (raising ManifestError with a field-relative message that the parser prefixes
with the path).

The format's graph interface is defined once, by `graph_io`: what each graph kind takes and
returns for a bundle's image and latent shapes. A manifest whose graphs list other I/O is
refused; every loader (this runtime, the C++ runtime, the engines and Triton exports) reads the
I/O from the manifest. Each graph file also records, in its ONNX metadata (`bld.graph`), the
facts it was built for (`graph_facts`: geometry, classes, schedule); loaders compare them with
the manifest (`check_graph_facts`), so an edited bld.json cannot silently change what a graph
means.

`load_bundle` checks the files: paths stay inside the bundle directory and files exist
(BundleIntegrityError). Hashes are checked when a graph is read (`Bundle.read_graph`), on the
very bytes that are then used, and only for the graphs a caller needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, Union

from . import contract, files
from .errors import BundleIntegrityError, ContractError, ManifestError, OutputError

FORMAT = "bld-bundle"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST_NAME = "bld.json"

KINDS = ("encoder", "decoder", "step", "step_guided")
REQUIRED_GRAPHS = KINDS
OPTIONAL_GRAPHS = ("decoder_fp16", "step_fp16", "step_guided_fp16", "step_int8", "step_guided_int8")
FP16_SUFFIX = "_fp16"
# The int8 set is the step graphs only: weights and activations of their MatMul/Gemm nodes
# quantized (QDQ), calibrated at export; the encoder and decoder stay fp32 (bld_export.quantize).
INT8_SUFFIX = "_int8"
PRECISION_SUFFIXES = {"fp16": FP16_SUFFIX, "int8": INT8_SUFFIX}
BATCH = "batch"  # the dynamic axis every graph input and output starts with
GRAPH_METADATA_KEY = "bld.graph"  # ONNX metadata_props entry holding graph_facts as JSON
MAX_MANIFEST_BYTES = 4 << 20  # a real bld.json is a few kB; refuse anything absurd unread
MAX_GRAPH_BYTES = 2 << 30  # protobuf's limit: no ONNX file (without external data) is larger

DType = Literal["float32", "float16", "int64", "int32", "uint8", "bool"]
Precision = Literal["fp32", "fp16", "int8"]
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. String dims are dynamic axes ("batch"), ints are fixed.

    Attributes:
        name: The tensor's name in the graph, e.g. "bits".
        dtype: "float32", "float16", "int64", "int32", "uint8" or "bool".
        shape: Dimensions: positive integers, or names of dynamic axes.

    Raises:
        ManifestError: An empty name, or a dimension that is neither >= 1 nor a name.
    """

    name: str
    dtype: DType
    shape: tuple[int | str, ...]

    def __post_init__(self) -> None:
        _require(self.name != "", "name must not be empty")
        for i, d in enumerate(self.shape):
            _require(
                d != "" and (isinstance(d, str) or d >= 1),
                f"shape[{i}] must be a positive integer or a dynamic axis name, got {d!r}",
            )


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle: its file (relative to the bundle directory) and its I/O.

    Attributes:
        file: The ONNX file, relative to the bundle directory (it must stay inside it).
        sha256: The file's sha256 (64 lowercase hex digits), checked when it is read.
        precision: "fp32", or "fp16" for the *_fp16 graphs, "int8" for the *_int8 ones.
        opset: The ONNX opset it was exported with.
        inputs: Its inputs, as `graph_io` defines them for its kind.
        outputs: Its outputs, as `graph_io` defines them.
        flops: FLOPs per image per call (MatMul/Gemm/Conv, 2 per multiply-add), counted at
            export.

    Raises:
        ManifestError: A field is malformed, or inputs/outputs are empty or repeat a name.
    """

    file: str
    sha256: str
    precision: Precision
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    flops: int  # per image per call (MatMul/Gemm/Conv, 2 per multiply-add), counted at export

    def __post_init__(self) -> None:
        _require(self.file != "", "file must not be empty")
        _require(self.flops >= 0, f"flops must be >= 0, got {self.flops}")
        _require(
            _SHA256.fullmatch(self.sha256) is not None,
            f"sha256 must be 64 lowercase hexadecimal digits, got {self.sha256!r}",
        )
        _require(self.opset >= 1, f"opset must be >= 1, got {self.opset}")
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            _require(len(specs) >= 1, f"{kind} must not be empty")
            names = [s.name for s in specs]
            _require(len(set(names)) == len(names), f"{kind} has duplicate names: {names}")

    def input(self, name: str) -> TensorSpec:
        """The input called `name`.

        Args:
            name: An input's name, e.g. "bits".

        Returns:
            Its spec.

        Raises:
            StopIteration: The graph has no such input.
        """
        return next(s for s in self.inputs if s.name == name)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs' names, in order."""
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs' names, in order."""
        return tuple(s.name for s in self.outputs)


@dataclass(frozen=True)
class ImageSpec:
    """The bundle's images.

    Attributes:
        height: Pixels (>= 1).
        width: Pixels (>= 1).
        channels: 1 (grayscale) or 3 (RGB) in practice; >= 1.

    Raises:
        ManifestError: A size below 1.
    """

    height: int
    width: int
    channels: int

    def __post_init__(self) -> None:
        for field in ("height", "width", "channels"):
            _require(getattr(self, field) >= 1, f"{field} must be >= 1, got {getattr(self, field)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, channels): one image of the runtime's uint8 NHWC API."""
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class LatentSpec:
    """The bundle's binary latent: height x width tokens of `bits` bits each.

    Attributes:
        height: Tokens per column (>= 1).
        width: Tokens per row (>= 1).
        bits: C, the bits per token (>= 1).

    Raises:
        ManifestError: A size below 1.
    """

    height: int
    width: int
    bits: int

    def __post_init__(self) -> None:
        _require(self.height >= 1, f"height must be >= 1, got {self.height}")
        _require(self.width >= 1, f"width must be >= 1, got {self.width}")
        _require(self.bits >= 1, f"bits must be > 0, got {self.bits}")

    @property
    def tokens(self) -> int:
        """L = height * width."""
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int]:
        """(L, C): one image's latent bits, L = H*W tokens in row-major order."""
        return (self.tokens, self.bits)


@dataclass(frozen=True)
class ClassesSpec:
    """The prior's classes.

    Attributes:
        count: How many classes (0 for an unconditional model).
        null_class: The unconditional class's index, always `count`.

    Raises:
        ManifestError: A negative count, or null_class != count.
    """

    count: int
    null_class: int

    def __post_init__(self) -> None:
        _require(self.count >= 0, f"count must be >= 0, got {self.count}")
        _require(
            self.null_class == self.count,
            f"null_class ({self.null_class}) must equal count ({self.count}): the "
            "unconditional class is the index after the last class",
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """The sampling schedule, which must be the sampling contract's for these numbers.

    Attributes:
        name: A schedule the contract defines (contract.SCHEDULES).
        train_steps: T, the steps the prior was trained with.
        sampling_steps: K, the steps sampling takes.
        timesteps: The K timesteps, strictly decreasing from at most T down to 1, exactly
            `contract.sampling_timesteps(T, K)`.

    Raises:
        ManifestError: An unknown schedule, or timesteps other than the contract's.
    """

    name: str
    train_steps: int
    sampling_steps: int
    timesteps: tuple[int, ...]

    def __post_init__(self) -> None:
        known = ", ".join(contract.SCHEDULES)
        _require(
            self.name in contract.SCHEDULES,
            f"unknown schedule {self.name!r}; the contract defines {known}",
        )
        ts, k = self.timesteps, self.sampling_steps
        _require(len(ts) == k, f"timesteps has {len(ts)} entries but sampling_steps is {k}")
        for a, b in itertools.pairwise(ts):
            _require(a > b, f"timesteps must be strictly decreasing, but {a} is followed by {b}")
        _require(len(ts) > 0 and ts[-1] == 1, f"timesteps must end at 1, got {list(ts[-1:])}")
        _require(
            ts[0] <= self.train_steps,
            f"timesteps must not exceed train_steps ({self.train_steps}), got {ts[0]}",
        )
        try:
            expected = contract.sampling_timesteps(self.train_steps, k).tolist()
        except ContractError as e:
            raise ManifestError(str(e)) from None
        _require(
            list(ts) == expected,
            f"timesteps {list(ts)} differ from the contract's {expected} for "
            f"train_steps={self.train_steps}, sampling_steps={k}",
        )


@dataclass(frozen=True)
class Defaults:
    """What a request gets when it does not say.

    Attributes:
        temperature: > 0.
        guidance: Classifier-free guidance scale, >= 0.

    Raises:
        ManifestError: A value out of range.
    """

    temperature: float
    guidance: float

    def __post_init__(self) -> None:
        _require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _require(self.guidance >= 0, f"guidance must be >= 0, got {self.guidance}")


@dataclass(frozen=True)
class Producer:
    """Versions of the software that exported the bundle (informational).

    Attributes:
        bld: The bld package.
        torch: PyTorch.
        onnx: The onnx package.
        onnxruntime: The onnxruntime that validated the export.
    """

    bld: str
    torch: str
    onnx: str
    onnxruntime: str


@dataclass(frozen=True)
class Manifest:
    """A bundle's bld.json (bundle format v1): what the graphs compute and how to sample.

    Built by the exporter, or parsed strictly by `Manifest.from_dict` / `parse_manifest_text`
    (unknown keys, missing keys and wrong types are refused, each error naming the path of
    the bad value).

    Attributes:
        format: Always FORMAT ("bld-bundle").
        schema_version: One of SUPPORTED_SCHEMA_VERSIONS.
        image: The images' size and channels.
        latent: The binary latent's shape.
        classes: The prior's classes.
        schedule: The sampling schedule.
        defaults: The request defaults (temperature, guidance).
        max_batch: The largest batch one graph call takes; larger requests are chunked.
        graphs: Graph name -> spec: every one of REQUIRED_GRAPHS, any of OPTIONAL_GRAPHS.
        producer: The software versions that exported it.

    Raises:
        ManifestError: Another format or version, max_batch < 1, an unknown or missing graph,
            or a graph whose I/O or precision is not what `graph_io` defines.
    """

    format: str
    schema_version: int
    image: ImageSpec
    latent: LatentSpec
    classes: ClassesSpec
    schedule: ScheduleSpec
    defaults: Defaults
    max_batch: int
    graphs: Mapping[str, GraphSpec]  # read-only once parsed
    producer: Producer

    def __post_init__(self) -> None:
        _check_format(self.format, self.schema_version)
        _require(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")
        for name in self.graphs:
            _require(
                name in REQUIRED_GRAPHS + OPTIONAL_GRAPHS,
                f"graphs: unknown graph {name!r}; known graphs are "
                f"{', '.join(REQUIRED_GRAPHS + OPTIONAL_GRAPHS)}",
            )
        for name in REQUIRED_GRAPHS:
            _require(name in self.graphs, f"graphs: missing graph {name!r}")
        for name, graph in self.graphs.items():
            _check_graph_interface(name, graph, self.image, self.latent)

    @classmethod
    def from_dict(cls, data: object, source: str = MANIFEST_NAME) -> Manifest:
        """Parse a decoded bld.json; every error names `source` and the path of the bad value.

        Args:
            data: The decoded JSON (normally a dict).
            source: What to call it in messages.

        Returns:
            The checked manifest.

        Raises:
            ManifestError: Another format or schema version (checked first), an unknown or
                missing key, a wrong type, or a value a dataclass refuses.
        """
        if isinstance(data, dict):  # check the version first: a newer schema may differ anywhere
            try:
                _check_format(data.get("format"), data.get("schema_version"))
            except ManifestError as e:
                raise ManifestError(f"{source}: {e}") from None
        return typing.cast(Manifest, _parse(cls, data, "", source))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict; `Manifest.from_dict(m.to_dict()) == m`.

        Returns:
            Plain dicts, lists, strings and numbers.
        """
        return typing.cast(dict[str, Any], _unparse(self))


def _check_format(fmt: object, version: object) -> None:
    _require(fmt == FORMAT, f"format is {fmt!r}, expected {FORMAT!r}: this is not a bld bundle")
    _require(
        type(version) is int and version in SUPPORTED_SCHEMA_VERSIONS,
        f"schema_version {version!r} is not supported; this runtime reads "
        f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}",
    )


# --- the graph interface of format v1 ----------------------------------------------------------


def graph_kind(name: str) -> str:
    """The kind of a graph ("step" for "step_fp16" and "step_int8").

    Args:
        name: A graph name.

    Returns:
        The name without its precision suffix ("_fp16", "_int8").
    """
    for suffix in PRECISION_SUFFIXES.values():
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def graph_precision(name: str) -> str:
    """The precision a graph name says: "fp16" for a *_fp16 graph, "int8" for a *_int8 graph,
    else "fp32"."""
    for precision, suffix in PRECISION_SUFFIXES.items():
        if name.endswith(suffix):
            return precision
    return "fp32"


def graph_io(
    kind: str, image: ImageSpec, latent: LatentSpec
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of a graph kind: the one definition of bundle format v1's graphs.

        encoder      image float32 [batch, ch, H, W] in [-1, 1]   -> probs float32 [batch, L, C]
        decoder      bits float32 [batch, L, C] (0/1)             -> image float32 [batch, ch, H, W]
        step         bits, step, class_label, temperature         -> probs float32 [batch, L, C]
        step_guided  the same plus guidance                       -> probs float32 [batch, L, C]

    fp16 and int8 graphs have the same float32 interface (they compute in fp16 or int8 inside).

    Args:
        kind: "encoder", "decoder", "step" or "step_guided" (KINDS).
        image: The bundle's images.
        latent: The bundle's latent.

    Returns:
        (inputs, outputs), each a tuple of TensorSpec whose first axis is "batch".

    Raises:
        ManifestError: An unknown kind.
    """
    pixels = TensorSpec("image", "float32", (BATCH, image.channels, image.height, image.width))
    bits = TensorSpec("bits", "float32", (BATCH, latent.tokens, latent.bits))
    probs = TensorSpec("probs", "float32", (BATCH, latent.tokens, latent.bits))
    conditions = (
        TensorSpec("step", "int64", (BATCH,)),
        TensorSpec("class_label", "int64", (BATCH,)),
        TensorSpec("temperature", "float32", (BATCH,)),
    )
    if kind == "encoder":
        return (pixels,), (probs,)
    if kind == "decoder":
        return (bits,), (pixels,)
    if kind == "step":
        return (bits, *conditions), (probs,)
    if kind == "step_guided":
        return (bits, *conditions, TensorSpec("guidance", "float32", (BATCH,))), (probs,)
    raise ManifestError(f"unknown graph kind {kind!r}; bundle format v1 has {', '.join(KINDS)}")


def _show_io(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {s.dtype} [{', '.join(map(str, s.shape))}]" for s in specs)


def _check_graph_interface(
    name: str, graph: GraphSpec, image: ImageSpec, latent: LatentSpec
) -> None:
    inputs, outputs = graph_io(graph_kind(name), image, latent)
    for field, listed, wanted in (
        ("inputs", graph.inputs, inputs),
        ("outputs", graph.outputs, outputs),
    ):
        _require(
            listed == wanted,
            f"graphs.{name}.{field}: bundle format v1 defines "
            f"{_show_io(wanted)} for this image and latent, got {_show_io(listed)}",
        )
    _require(
        graph.precision == graph_precision(name),
        f"graphs.{name}.precision: must be {graph_precision(name)!r}, got {graph.precision!r}",
    )


def graph_facts(
    name: str,
    opset: int,
    image: ImageSpec,
    latent: LatentSpec,
    classes: ClassesSpec,
    schedule: ScheduleSpec,
) -> dict[str, Any]:
    """What a graph file records about itself (ONNX metadata `bld.graph`, as JSON): everything
    the graph embodies that the manifest also states. The exporter writes it into every graph;
    `check_graph_facts` holds a manifest to it.

    Args:
        name: The graph's name, e.g. "step_fp16".
        opset: Its ONNX opset.
        image: The bundle's images.
        latent: The bundle's latent.
        classes: The prior's classes.
        schedule: The sampling schedule.

    Returns:
        A JSON-ready dict: name, kind, precision, opset, image, latent, classes, schedule.
    """
    return {
        "name": name,
        "kind": graph_kind(name),
        "precision": graph_precision(name),
        "opset": opset,
        "image": _unparse(image),
        "latent": _unparse(latent),
        "classes": _unparse(classes),
        "schedule": _unparse(schedule),
    }


def manifest_graph_facts(manifest: Manifest, name: str) -> dict[str, Any]:
    """`graph_facts` of graph `name` as `manifest` states them.

    Args:
        manifest: A bundle's manifest.
        name: One of its graphs.

    Returns:
        The facts the graph file must record.

    Raises:
        KeyError: The manifest has no such graph.
    """
    m = manifest
    return graph_facts(name, m.graphs[name].opset, m.image, m.latent, m.classes, m.schedule)


def check_graph_facts(manifest: Manifest, name: str, metadata: Mapping[str, str]) -> None:
    """Refuse a graph whose recorded facts differ from the manifest's (ManifestError naming the
    graph and the first fact that differs).

    Args:
        manifest: The bundle's manifest.
        name: One of its graphs.
        metadata: The graph file's ONNX metadata (metadata_props as a mapping).

    Raises:
        ManifestError: No `bld.graph` entry, one that is not a JSON object, or a fact that
            differs.
    """
    where = f"graph {name!r} ({manifest.graphs[name].file})"
    raw = metadata.get(GRAPH_METADATA_KEY)
    if raw is None:
        raise ManifestError(
            f"{where} records no {GRAPH_METADATA_KEY!r} metadata, so the "
            "manifest cannot be checked against it; re-export the bundle with "
            "this version of bld-export"
        )
    try:
        recorded = json.loads(raw)
    except (ValueError, RecursionError):
        raise ManifestError(
            f"{where}: its {GRAPH_METADATA_KEY!r} metadata is not valid JSON"
        ) from None
    expected = manifest_graph_facts(manifest, name)
    if not isinstance(recorded, dict):
        raise ManifestError(f"{where}: its {GRAPH_METADATA_KEY!r} metadata is not an object")
    for key, want in expected.items():
        got = recorded.get(key)
        if got != want:
            raise ManifestError(
                f"{where} was built for {key} {json.dumps(got)}, but "
                f"{MANIFEST_NAME} says {json.dumps(want)}"
            )


# --- the generic parser, driven by the type hints ----------------------------------------------

_JSON_NAMES: dict[object, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _describe(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _expected(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "an array"
    if origin is Mapping or dataclasses.is_dataclass(tp):
        return "an object"
    return _JSON_NAMES[tp]


def _parse(tp: object, value: object, path: str, source: str) -> object:
    def fail(message: str) -> typing.NoReturn:
        raise ManifestError(f"{source}: {path}: {message}" if path else f"{source}: {message}")

    def wrong_type() -> typing.NoReturn:
        shown = f" {value!r}" if isinstance(value, (str, int, float)) else ""
        fail(f"expected {_expected(tp)}, got {_describe(value)}{shown}")

    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            wrong_type()
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for key in value:
            if key not in hints:
                fail(f"unknown key {key!r}")
        for key in names:
            if key not in value:
                fail(f"missing key {key!r}")
        kwargs = {
            k: _parse(hints[k], value[k], f"{path}.{k}" if path else k, source) for k in names
        }
        try:
            return tp(**kwargs)
        except ManifestError as e:
            fail(str(e))
    if origin is Mapping:
        _, value_type = typing.get_args(tp)  # Mapping[str, X]
        if not isinstance(value, dict):
            wrong_type()
        parsed = {k: _parse(value_type, v, f"{path}.{k}", source) for k, v in value.items()}
        return types.MappingProxyType(parsed)
    if origin is tuple:
        item_type, _ = typing.get_args(tp)  # tuple[X, ...]
        if not isinstance(value, list):
            wrong_type()
        return tuple(_parse(item_type, v, f"{path}[{i}]", source) for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _parse(option, value, path, source)
            except ManifestError:
                continue
        wrong_type()
    if origin is Literal:
        if type(value) is not str or value not in typing.get_args(tp):
            wrong_type()
        return value
    if tp is float:  # JSON writes 1.0 as 1 at times; bools are not numbers
        if type(value) is not int and type(value) is not float:
            wrong_type()
        number = float(value)
        if not math.isfinite(number):
            fail(f"{value} is not a finite number")
        return number
    if type(value) is not tp:  # exact: JSON true is not an integer
        wrong_type()
    if type(value) is int and not -(2**63) <= value < 2**63:
        fail(f"{value} is out of range (64-bit integers)")
    return value


def _unparse(value: object) -> object:
    if dataclasses.is_dataclass(value):
        return {f.name: _unparse(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _unparse(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_unparse(v) for v in value]
    return value


# --- files -------------------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ManifestError(f"{MANIFEST_NAME}: duplicate key {k!r}")
    return dict(pairs)


def _reject_constant(name: str) -> typing.NoReturn:
    raise ManifestError(f"{MANIFEST_NAME}: {name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ManifestError(f"{MANIFEST_NAME}: the number {text} is out of range")
    return value


def parse_manifest_text(text: str) -> Manifest:
    """Parse the text of a bld.json (strict JSON: no NaN/Infinity, no duplicate keys).

    Args:
        text: The file's text.

    Returns:
        The checked manifest (`Manifest.from_dict`).

    Raises:
        ManifestError: Invalid or too deeply nested JSON, or an invalid manifest.
    """
    try:
        data = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ManifestError(f"{MANIFEST_NAME}: not valid JSON ({e.msg} at {where})") from None
    except RecursionError:
        raise ManifestError(f"{MANIFEST_NAME}: nested too deeply to be a bundle manifest") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise ManifestError(f"{MANIFEST_NAME}: not a valid bundle manifest ({e})") from None
    return Manifest.from_dict(data)


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Validate `manifest` and write bundle_dir/bld.json atomically (temporary file + rename).

    Args:
        bundle_dir: The bundle's folder (it must exist).
        manifest: The manifest to write; it gets the same checks as a loaded one.

    Returns:
        The path of bld.json.

    Raises:
        ManifestError: The manifest does not pass the loader's checks.
        OSError: The file cannot be written.
    """
    data = manifest.to_dict()
    Manifest.from_dict(data)  # a manifest built in code gets the same checks as a loaded one
    target = Path(bundle_dir) / MANIFEST_NAME
    files.atomic_write(target, (json.dumps(data, indent=2) + "\n").encode())
    return target


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its directory and manifest. Graph bytes are read (and their sha256
    checked) on demand, by `read_graph`.

    Made by `load_bundle`, which checks the manifest and that every graph file is inside the
    directory and present.

    Attributes:
        directory: The bundle's folder.
        manifest: Its bld.json.

    Example:
        ```python
        bundle = load_bundle("runs/digits/bundle")
        print(bundle.manifest.image.shape, bundle.manifest.max_batch)
        onnx_bytes = bundle.read_graph("decoder")  # sha256 checked on these very bytes
        ```
    """

    directory: Path
    manifest: Manifest

    def graph_path(self, name: str) -> Path:
        """The file of graph `name` (not opened or checked).

        Args:
            name: A graph of the manifest, e.g. "step_fp16".

        Returns:
            directory / the graph's file.

        Raises:
            ManifestError: The bundle has no such graph.
        """
        graphs = self.manifest.graphs
        if name not in graphs:
            raise ManifestError(
                f"bundle {self.directory} has no graph {name!r} (it has {', '.join(graphs)})"
            )
        return self.directory / graphs[name].file

    def read_graph(self, name: str, verify_hash: bool = True) -> bytes:
        """The bytes of graph `name`, checked against the manifest's sha256.

        Use these very bytes (e.g. onnxruntime.InferenceSession(bytes)): a file swapped after
        this check is never run.

        Args:
            name: A graph of the manifest.
            verify_hash: Check the sha256 (False only where the caller checks it otherwise).

        Returns:
            The ONNX file's bytes.

        Raises:
            ManifestError: The bundle has no such graph.
            BundleIntegrityError: The file is outside the bundle, missing, not a regular file,
                larger than MAX_GRAPH_BYTES, unreadable, or its sha256 differs.
        """
        path = self.graph_path(name)
        _check_graph_file(self.directory, name, self.manifest.graphs[name])
        data = files.read_input(path, "graph file", BundleIntegrityError, MAX_GRAPH_BYTES)
        if verify_hash:
            actual = files.sha256_bytes(data)
            expected = self.manifest.graphs[name].sha256
            if actual != expected:
                raise BundleIntegrityError(
                    f"graph file {self.manifest.graphs[name].file!r} (graphs.{name}) does not "
                    f"match the manifest: sha256 expected {expected}, actual {actual}"
                )
        return data

    def verify_files(self, names: typing.Iterable[str] | None = None) -> None:
        """Check the sha256 of the named graphs (default: all), reading each in chunks.

        Args:
            names: Graphs of the manifest; None for all of them.

        Raises:
            KeyError: A name is not a graph of the manifest.
            BundleIntegrityError: A file is outside the bundle, missing, unreadable, too large
                or its sha256 differs.
        """
        for name in self.manifest.graphs if names is None else names:
            graph = self.manifest.graphs[name]
            _check_graph_file(self.directory, name, graph)
            actual = files.sha256_file(
                self.graph_path(name),
                what="graph file",
                error=BundleIntegrityError,
                max_bytes=MAX_GRAPH_BYTES,
            )
            if actual != graph.sha256:
                raise BundleIntegrityError(
                    f"graph file {graph.file!r} (graphs.{name}) does not match the manifest: "
                    f"sha256 expected {graph.sha256}, actual {actual}"
                )


def _check_graph_file(directory: Path, name: str, graph: GraphSpec) -> None:
    where = f"{MANIFEST_NAME}: graphs.{name}.file {graph.file!r}"
    _check_bundle_path(directory, graph.file, where)
    # Missing (or a dangling symlink); anything else that is not a regular file (a FIFO, a
    # folder, a socket) is refused by what it is when it is opened (files.open_input).
    if not (directory / graph.file).exists():
        raise BundleIntegrityError(
            f"graph file {graph.file!r} (graphs.{name}) is missing from bundle {directory}"
        )


def _check_bundle_path(directory: Path, relative: str, where: str) -> None:
    """The one rule for every file of a bundle (bld.json and the graphs): a relative path that
    stays inside the bundle directory, symlinks resolved."""
    if "\0" in relative:
        raise BundleIntegrityError(f"{where} contains a NUL character")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise BundleIntegrityError(
            f"{where} is an absolute path; graph files must be relative to the bundle directory"
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise BundleIntegrityError(f"{where} uses '..' to leave the bundle directory")
    path = directory / relative
    try:
        resolved = path.resolve(strict=False)
        inside = resolved.is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        raise BundleIntegrityError(f"{where} cannot be resolved (a symlink loop?)") from None
    if not inside:
        raise BundleIntegrityError(
            f"{where} resolves (through a symlink) to {resolved}, outside the bundle directory"
        )


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and check a bundle directory (or its bld.json): manifest, paths and files.

    Graph hashes are checked when the graphs are read (Bundle.read_graph / verify_files).
    A bundle left half replaced by a killed `bld-export --force` is finished first.

    Args:
        path: The bundle's folder, or its bld.json.

    Returns:
        The loaded bundle.

    Raises:
        BundleIntegrityError: The folder or bld.json is missing, a path leaves the bundle, a
            graph file is missing, or a half-finished replacement cannot be restored.
        ManifestError: bld.json is too large, not UTF-8, not JSON, or not a valid manifest.
    """
    path = Path(path)
    # BUNDLE/bld.json whatever it is (a FIFO, a folder: refused below by what it is)
    directory = path.parent if path.name == MANIFEST_NAME and os.path.lexists(path) else path
    if not directory.is_dir() and files.pending_replacement(directory):
        _finish_replacement(directory)
    if not directory.is_dir():
        raise BundleIntegrityError(f"bundle directory {directory} does not exist")
    manifest_path = directory / MANIFEST_NAME
    _check_bundle_path(directory, MANIFEST_NAME, MANIFEST_NAME)  # a loop, a symlink outside
    if not manifest_path.exists():  # a folder, a FIFO, a device: refused by what it is below
        raise BundleIntegrityError(f"{directory} is not a bundle: it has no {MANIFEST_NAME}")
    with files.open_input(manifest_path, "bundle manifest", BundleIntegrityError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{manifest_path} is {size} bytes, far larger than any bundle manifest "
                f"(at most {MAX_MANIFEST_BYTES})"
            )
        data = f.read(size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{MANIFEST_NAME}: not valid UTF-8 text") from None
    manifest = parse_manifest_text(text)
    for name, graph in manifest.graphs.items():
        _check_graph_file(directory, name, graph)
    return Bundle(directory=directory, manifest=manifest)


def _finish_replacement(directory: Path) -> None:
    try:
        with files.OutputLock(directory, f"bundle {directory}"):
            files.recover_directory(directory)
    except (OSError, OutputError) as e:
        raise BundleIntegrityError(
            f"bundle {directory} was being replaced by another process "
            f"and cannot be restored now ({e})"
        ) from None
