"""A real tritonserver (2.51, from the nvidia-pytriton wheel) serves the tiny bundle.

The server is installed by bld_serving.local_server (pip download + unzip, cached in
BLD_TRITON_CACHE or ~/.cache/bld/triton), started on 127.0.0.1 with free ports and stopped by
PID by a finalizer registered before it starts, so it never outlives the tests. Served images
and bits must be identical to Pipeline.generate's for the same request.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bld_runtime import protocol
from bld_runtime.bits import pack_bits
from bld_runtime.errors import InvalidRequestError
from bld_runtime.pipeline import Pipeline
from bld_serving.configs import Serving
from bld_serving.local_server import LocalTriton, install
from bld_serving.repository import write_repository

BATCH_CHECK = "bld_batch_check"  # `bld` with a long queue delay: 16 requests = one batch
BATCH_CHECK_DELAY_US = 1_000_000


@pytest.fixture(scope="module")
def triton_install():
    return install()


@pytest.fixture(scope="module")
def repository(tiny_bundle, triton_install, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton") / "repository"
    write_repository(
        tiny_bundle,
        repo,
        Serving(
            max_batch=16, queue_delay_us=2000, threads=1, python_env=str(triton_install.python_env)
        ),
    )
    # A copy of `bld` whose batcher waits up to 1 s for 16 requests, so that requests sent
    # together are provably one batch (its execution count grows by one).
    check = repo / BATCH_CHECK
    shutil.copytree(repo / protocol.MODEL, check)
    config = (check / "config.pbtxt").read_text()
    config = config.replace(f'name: "{protocol.MODEL}"', f'name: "{BATCH_CHECK}"')
    config = config.replace(
        "max_queue_delay_microseconds: 2000",
        f"max_queue_delay_microseconds: {BATCH_CHECK_DELAY_US}",
    )
    (check / "config.pbtxt").write_text(config)
    return repo


@pytest.fixture(scope="module")
def server(repository, triton_install, request):
    server = LocalTriton(
        repository, triton_install, log_path=repository.parent / "tritonserver.log"
    )
    request.addfinalizer(server.stop)  # registered first: a failed start is stopped too
    server.start()
    return server


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def _requests(pipe, count=64):
    """Mixed requests: seeds (with the ends of the range), classes (None = unconditional),
    guidance, temperature, and every eighth an inpainting request."""
    rng = np.random.default_rng(12)
    L, C = pipe.latent_shape
    requests = []
    for i in range(count):
        req = dict(
            seed=int(rng.integers(0, 2**63)) if i % 5 else [0, 2**64 - 1, 7][i % 3],
            class_=pipe.null_class if i % 11 == 0 else int(i % pipe.num_classes),
            guidance=[0.0, 1.0, 2.5][i % 3],
            temperature=[1.0, 0.8, 1.3][i % 4 % 3],
            mask=None,
            known_bits=None,
        )
        if i % 8 == 3:
            req["mask"] = (rng.random((L, C)) < 0.5).astype(np.uint8)
            req["known_bits"] = (rng.random((L, C)) < 0.5).astype(np.uint8)
        requests.append(req)
    return requests


def _local(pipe, req):
    out = pipe.generate(
        seeds=[req["seed"]],
        classes=req["class_"],
        guidance=req["guidance"],
        temperature=req["temperature"],
        mask=req["mask"],
        known_bits=req["known_bits"],
    )
    return out.images[0], pack_bits(out.bits)[0]


def _inputs(module, req):
    values = [
        (protocol.SEED, np.array([[req["seed"]]], np.uint64)),
        (protocol.CLASS, np.array([[req["class_"]]], np.int64)),
    ]
    values.append((protocol.GUIDANCE, np.array([[req["guidance"]]], np.float32)))
    values.append((protocol.TEMPERATURE, np.array([[req["temperature"]]], np.float32)))
    for spec, key in ((protocol.MASK, "mask"), (protocol.KNOWN_BITS, "known_bits")):
        if req.get(key) is not None:
            values.append((spec, np.asarray(req[key])[None]))
    if req.get("preview_every") is not None:
        values.append((protocol.PREVIEW_EVERY, np.array([[req["preview_every"]]], np.int32)))
    inputs = []
    for spec, value in values:
        tensor = module.InferInput(spec.name, list(value.shape), spec.dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _infer(url, req, model=protocol.MODEL):
    client = httpclient.InferenceServerClient(url.split("://")[1], network_timeout=120)
    try:
        result = client.infer(model, _inputs(httpclient, req))
        return result.as_numpy(protocol.IMAGE.name)[0], result.as_numpy(protocol.BITS.name)[0]
    finally:
        client.close()


def _stats(url, model, at_least: int = 0):
    """(inference count, execution count); Triton records a batch's statistics just after
    its responses are sent, so wait (bounded) until `at_least` inferences are counted."""
    client = httpclient.InferenceServerClient(url.split("://")[1])
    deadline = time.monotonic() + 10
    while True:
        stats = client.get_inference_statistics(model)["model_stats"][0]
        if stats["inference_count"] >= at_least or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    client.close()
    return stats["inference_count"], stats["execution_count"]


def _refused(server, model) -> float:
    """The model's bld_refused_requests_total on the metrics port."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    prefix = f'bld_refused_requests_total{{model="{model}",version="1"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _same(served, local):
    return np.array_equal(served[0], local[0]) and np.array_equal(served[1], local[1])


def test_served_images_are_identical_to_local_ones_alone_and_batched(server, pipe):
    requests = _requests(pipe)
    expected = [_local(pipe, req) for req in requests]

    one_by_one = [_infer(server.http_url, req) for req in requests]
    assert all(_same(s, e) for s, e in zip(one_by_one, expected, strict=True))

    order = list(range(len(requests)))
    random.Random(3).shuffle(order)
    before = _stats(server.http_url, protocol.MODEL)
    with ThreadPoolExecutor(16) as pool:
        served = dict(
            zip(order, pool.map(lambda i: _infer(server.http_url, requests[i]), order), strict=True)
        )
    after = _stats(server.http_url, protocol.MODEL, before[0] + len(requests))
    assert all(_same(served[i], expected[i]) for i in order)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(requests)
    assert executions < inferences, "16 concurrent clients should have been batched"


def test_a_bad_request_fails_alone_and_the_rest_of_its_batch_succeeds(server, pipe):
    L, C = pipe.latent_shape
    # Triton batches requests that send the same inputs: all of these send a mask (all zero
    # for a plain request, which keeps nothing).
    good = [
        dict(req, mask=np.zeros((L, C), np.uint8), known_bits=np.zeros((L, C), np.uint8))
        if req["mask"] is None
        else req
        for req in _requests(pipe, 12)
    ]
    bad = {
        "class": (
            dict(good[0], class_=pipe.num_classes + 2),
            f"class {pipe.num_classes + 2} is out of range",
        ),
        "nan guidance": (
            dict(good[1], guidance=float("nan")),
            "guidance must be finite and >= 0, got nan",
        ),
        "mask shape": (
            dict(good[2], mask=np.zeros((L + 1, C), np.uint8)),
            f"mask must be 0/1 integers shaped (N, {L}, {C}), got uint8 (1, {L + 1}, {C})",
        ),
        "mask values": (
            dict(good[5], mask=np.full((L, C), 2, np.uint8)),
            "mask must hold only 0 and 1",
        ),
    }
    sent = good + [req for req, _ in bad.values()]
    assert len(sent) == 16  # = max_batch_size: the batcher runs them as one batch
    barrier = threading.Barrier(len(sent))

    def send(req):
        barrier.wait()
        try:
            return _infer(server.http_url, req, BATCH_CHECK)
        except InferenceServerException as e:
            return e

    before = _stats(server.http_url, BATCH_CHECK)
    refused_before = _refused(server, BATCH_CHECK)
    with ThreadPoolExecutor(len(sent)) as pool:
        results = list(pool.map(send, sent))
    after = _stats(server.http_url, BATCH_CHECK, before[0] + len(sent))
    assert _refused(server, BATCH_CHECK) - refused_before == len(bad)  # the model's metric
    for req, result in zip(good, results[: len(good)], strict=True):
        assert not isinstance(result, Exception), result
        assert _same(result, _local(pipe, req))
    for (name, (_, message)), result in zip(bad.items(), results[len(good) :], strict=True):
        assert isinstance(result, InferenceServerException), name
        assert message in result.message(), (name, result.message())
    assert after[0] - before[0] == len(sent)
    assert after[1] - before[1] == 1  # they were one batch

    with pytest.raises(InferenceServerException, match="needs both mask and known_bits"):
        _infer(server.http_url, dict(good[3], known_bits=None))
    assert server.alive()
    assert _same(_infer(server.http_url, good[3]), _local(pipe, good[3]))


def test_stream_sends_previews_every_k_steps_then_the_final_image(server, pipe):
    K = pipe.num_steps
    cases = [
        dict(req, preview_every=every)
        for req, every in zip(_requests(pipe, 4), (4, 5, 0, K), strict=True)
    ]
    responses = {i: [] for i in range(len(cases))}
    done = threading.Semaphore(0)

    def receive(result, error):
        assert error is None, error
        i = int(result.get_response().id)
        responses[i].append(
            (
                int(result.as_numpy("step")[0, 0]),
                bool(result.as_numpy("final")[0, 0]),
                result.as_numpy("image")[0],
                result.as_numpy("bits")[0],
            )
        )
        if responses[i][-1][1]:
            done.release()

    client = grpcclient.InferenceServerClient(server.grpc_url.split("://")[1])
    client.start_stream(callback=receive)
    try:
        for i, req in enumerate(cases):
            client.async_stream_infer(
                protocol.STREAM_MODEL, _inputs(grpcclient, req), request_id=str(i)
            )
        for _ in cases:
            assert done.acquire(timeout=120)
    finally:
        client.stop_stream()
        client.close()

    for i, req in enumerate(cases):
        every = req["preview_every"]
        local = pipe.generate(
            seeds=[req["seed"]],
            classes=req["class_"],
            guidance=req["guidance"],
            temperature=req["temperature"],
            mask=req["mask"],
            known_bits=req["known_bits"],
            trace=True,
        )
        got = responses[i]
        steps = list(range(every, K + 1, every)) if every else []
        assert [(s, f) for s, f, _, _ in got] == [(s, False) for s in steps] + [(K, True)]
        for step, _, image, bits in got[:-1]:  # bits after step s = what step s + 1 is fed
            state = local.trace.states[step] if step < K else local.bits
            assert np.array_equal(bits, pack_bits(state)[0])
            assert np.array_equal(image, pipe.decode(state)[0])
        assert np.array_equal(got[-1][2], local.images[0])
        assert np.array_equal(got[-1][3], pack_bits(local.bits)[0])


def test_bld_sample_on_the_server_writes_the_same_files_as_locally(
    server, tiny_bundle, tmp_path, subprocess_env
):
    args = [
        "--seed",
        str(2**64 - 5),
        "-n",
        "20",
        "--class",
        "all",
        "--guidance",
        "1",
        "--temperature",
        "0.9",
    ]

    def sample(*where, out):
        result = subprocess.run(
            [sys.executable, "-m", "bld_runtime.cli", "sample", *where, *args, "-o", str(out)],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        record = json.loads((out / "samples.json").read_text())
        assert (record["status"], record["written"]) == ("complete", 20)
        return {
            p.name: p.read_bytes()
            for p in out.iterdir()
            if p.name != "samples.json" and ".step" not in p.name
        }

    local = sample(str(tiny_bundle), out=tmp_path / "local")
    assert len(local) == 20 + 2  # PNGs, bits.bldz, grid.png (the same writer for all three)
    assert sample("--server", server.http_url, out=tmp_path / "http") == local
    assert (
        sample("--server", server.grpc_url, "--preview-every", "8", out=tmp_path / "grpc") == local
    )
    previews = sorted(p.name for p in (tmp_path / "grpc").glob("*.step*.png"))
    assert previews == [f"{i:05d}.step{s:02d}.png" for i in range(20) for s in (8, 16)]
    # the output folder rules hold for served runs too: --force replaces previews as well
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "bld_runtime.cli",
            "sample",
            "--server",
            server.http_url,
            "-n",
            "2",
            "-o",
            str(tmp_path / "grpc"),
            "--force",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "grpc").iterdir()) == [
        "00000.png",
        "00001.png",
        "bits.bldz",
        "grid.png",
        "samples.json",
    ]

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bld_runtime.cli",
            "sample",
            "--server",
            server.http_url,
            "--guidance",
            "-1",
            "-o",
            str(tmp_path / "bad"),
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: image 0 (seed 0): guidance must be finite and >= 0, got -1"
    ]
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_remote_pipeline_is_pipeline_on_the_server(server, pipe):
    """RemotePipeline.generate/iter_generate: the same arguments and results as Pipeline's,
    in chunks of the served max_batch, over HTTP and gRPC (with previews)."""
    from bld_runtime.remote import RemoteError, RemotePipeline

    kwargs = dict(
        n=20,
        seeds=2**64 - 3,
        classes="all",
        guidance=np.linspace(0, 2, 20, dtype=np.float32),
        temperature=0.9,
    )
    local = pipe.generate(**kwargs)
    with RemotePipeline.connect(server.http_url, concurrency=5) as remote:
        assert (remote.num_classes, remote.num_steps, remote.max_batch) == (
            pipe.num_classes,
            pipe.num_steps,
            16,
        )
        chunks = list(remote.iter_generate(**kwargs))
        assert [len(c.images) for c in chunks] == [16, 4]
        served = remote.generate(**kwargs)
        for name in ("images", "bits", "seeds", "classes"):
            np.testing.assert_array_equal(getattr(served, name), getattr(local, name))
        with pytest.raises(RemoteError, match=r"image 3 .*guidance must be finite"):
            list(remote.iter_generate(n=4, guidance=[0, 1, 2, float("nan")]))
        with pytest.raises(InvalidRequestError, match="previews stream over gRPC only"):
            remote.generate(preview_every=4)
    previews = []
    with RemotePipeline.connect(server.grpc_url) as remote:
        served = remote.generate(
            **kwargs, preview_every=8, on_preview=lambda i, step, image: previews.append((i, step))
        )
    np.testing.assert_array_equal(served.bits, local.bits)
    assert sorted(previews) == [(i, s) for i in range(20) for s in (8, 16)]


def test_short_load_has_no_errors_and_bounded_memory(server, pipe):
    from bld_serving.loadtest import run_load, warm_up

    seeds = np.arange(48, dtype=np.uint64)
    local = pipe.generate(
        seeds=seeds,
        classes=(seeds % pipe.num_classes).astype(np.int64),
        guidance=0.0,
        temperature=1.0,
    )
    expected = dict(zip(seeds.tolist(), pack_bits(local.bits), strict=True))
    warm_up(server.http_url, max_batch=16, classes=pipe.num_classes)
    report = run_load(
        server.http_url, expected, clients=16, duration_s=6.0, rss=lambda: server.rss_bytes()[1]
    )
    print(report.summary())
    assert report.errors == [] and report.mismatches == 0
    assert report.requests > 16
    assert report.rss_growth < 0.10, report.summary()


def test_the_server_and_its_model_processes_stop_by_pid(repository, triton_install, tmp_path):
    server = LocalTriton(repository, triton_install, log_path=tmp_path / "log")
    try:
        server.start()
        group = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _pgid(int(p.name)) == server.pid
        ]
        assert server.pid in group and len(group) > 1  # the server and its model stubs
    finally:
        server.stop()
    assert not server.alive()
    assert not [p for p in group if _pgid(p) == server.pid]


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_gpu_layouts_bls_loop_matches_local_sampling(
    precision, triton_install, tmp_path, request
):
    """The BLS model `bld` of `--graphs`, on a real server, its graph models swapped for
    Python-backend ones (tests/serving_models/onnx_graph_model.py): same images as local
    sampling, fp32 and int8 (the graph layout of --backend tensorrt --precision int8)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    bundle = request.getfixturevalue("tiny_bundle" if precision == "fp32" else "tiny_int8_bundle")
    if precision == "int8":
        from bld_runtime.backends.int8 import check_int8_cpu
        from bld_runtime.errors import BackendUnavailableError

        try:
            check_int8_cpu()  # the local int8 images need it
        except BackendUnavailableError as e:
            pytest.skip(f"this CPU runs no int8: {e}")
    pipe = Pipeline.load(bundle, precision=precision)
    repo = tmp_path / "repository"
    serving = Serving(
        max_batch=16,
        queue_delay_us=2000,
        threads=1,
        python_env=str(triton_install.python_env),
        precision=precision,
    )
    names = write_repository(bundle, repo, serving, graphs=True)
    runner = Path(__file__).parent / "serving_models" / "onnx_graph_model.py"
    for name in names:
        config = pb.ModelConfig()
        text_format.Parse((repo / name / "config.pbtxt").read_text(), config)
        if config.platform != "onnxruntime_onnx":
            continue
        config.ClearField("platform")
        config.ClearField("default_model_filename")
        config.backend = "python"
        config.parameters["EXECUTION_ENV_PATH"].string_value = str(triton_install.python_env)
        (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
        shutil.copy(runner, repo / name / "1" / "model.py")

    server = LocalTriton(repo, triton_install, log_path=tmp_path / "tritonserver.log")
    request.addfinalizer(server.stop)
    server.start()
    requests = _requests(pipe, 24)
    expected = [_local(pipe, req) for req in requests]
    assert all(
        _same(_infer(server.http_url, req), e)
        for req, e in zip(requests[:8], expected[:8], strict=True)
    )
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda req: _infer(server.http_url, req), requests))
    assert all(_same(s, e) for s, e in zip(served, expected, strict=True))
    # The loop's graph calls went to the graph models: every image decoded once and stepped
    # num_steps times. Rows, not executions: the graph models batch dynamically, so two BLS
    # batches' calls may share one execution.
    images = _stats(server.http_url, "bld", at_least=len(requests) + 8)[0]
    assert images == len(requests) + 8
    assert _stats(server.http_url, "bld_decoder", at_least=images)[0] == images
    deadline = time.monotonic() + 10
    while True:  # the step models' statistics may lag the responses too
        step_rows = sum(_stats(server.http_url, f"bld_{r}")[0] for r in ("step", "step_guided"))
        if step_rows >= pipe.num_steps * images or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert step_rows == pipe.num_steps * images
    with pytest.raises(InferenceServerException, match="guidance must be finite"):
        _infer(server.http_url, dict(requests[0], guidance=float("inf")))


def test_an_int8_repository_serves_the_runtimes_int8_images(
    tiny_int8_bundle, triton_install, tmp_path, request
):
    """`bld-export triton --precision int8` (cpu backend): the Python models sample with the
    bundle's int8 step graphs, images and bits those of local int8 sampling."""
    from bld_runtime.backends.int8 import check_int8_cpu
    from bld_runtime.errors import BackendUnavailableError

    try:
        check_int8_cpu()
    except BackendUnavailableError as e:
        pytest.skip(f"this CPU runs no int8: {e}")
    repo = tmp_path / "repository"
    serving = Serving(precision="int8", threads=1, python_env=str(triton_install.python_env))
    write_repository(tiny_int8_bundle, repo, serving)
    server = LocalTriton(repo, triton_install, log_path=tmp_path / "tritonserver.log")
    request.addfinalizer(server.stop)
    server.start()
    int8 = Pipeline.load(tiny_int8_bundle, precision="int8")
    requests = _requests(int8, 12)
    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(lambda req: _infer(server.http_url, req), requests))
    assert all(_same(s, _local(int8, req)) for s, req in zip(served, requests, strict=True))
    fp32 = Pipeline.load(tiny_int8_bundle)
    assert not all(_same(s, _local(fp32, req)) for s, req in zip(served, requests, strict=True))


def test_a_repository_whose_bundle_was_altered_does_not_load(
    tiny_bundle, triton_install, tmp_path, request
):
    from bld_serving.errors import ServerError

    repo = tmp_path / "repository"
    write_repository(tiny_bundle, repo, Serving(python_env=str(triton_install.python_env)))
    graph = repo / protocol.MODEL / "1" / "bundle" / "decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1
    graph.unlink()  # a new file: the repository's graphs may be hard links to the bundle's
    graph.write_bytes(bytes(data))
    server = LocalTriton(repo, triton_install, log_path=tmp_path / "tritonserver.log")
    request.addfinalizer(server.stop)
    with pytest.raises(ServerError) as failed:
        server.start()
    assert "graph file 'decoder.onnx' (graphs.decoder) does not match the manifest" in str(
        failed.value
    )
    assert not server.alive()


def test_bld_sample_server_errors_are_one_line(tmp_path, subprocess_env):
    for args, message in (
        (
            ["--server", "http://127.0.0.1:1"],
            "error: cannot reach a Triton server at http://127.0.0.1:1",
        ),
        (
            ["--server", "ftp://x"],
            "error: --server must look like http://HOST:PORT or grpc://HOST:PORT, got 'ftp://x'",
        ),
        ([], "error: give a BUNDLE to sample locally, or --server URL"),
        (
            ["--server", "http://127.0.0.1:1", "--precision", "fp16", "--threads", "1"],
            "error: --precision, --threads chooses how the local runtime runs; with "
            "--server the model repository decides",
        ),
        (  # named as the options are spelt (--dla, not its parameter's name dla_core)
            ["--server", "http://127.0.0.1:1", "--dla", "0", "--no-pin-threads"],
            "error: --pin-threads/--no-pin-threads, --dla chooses how the local runtime runs; "
            "with --server the model repository decides",
        ),
        (
            ["--server", "http://127.0.0.1:1", "--preview-every", "2"],
            "error: cannot reach a Triton server",
        ),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "bld_runtime.cli", "sample", *args, "-o", str(tmp_path / "out")],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith(message), result.stderr
