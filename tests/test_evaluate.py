"""`bld evaluate` on the tiny bundle: the report's figures exist, are in range and consistent."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("sklearn")

from bld_workflows.cli import evaluate


def test_evaluate_reports_every_figure(tiny_bundle, tmp_path):
    result = CliRunner().invoke(
        evaluate,
        [str(tiny_bundle), "--guidance", "0,2", "--per-class", "3", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert 5.0 < report["psnr_db"] < 60.0 and 5.0 < report["psnr_canonical_code_db"] < 60.0
    # Every latent that settled is a fixed point of encode(decode(.)).
    assert report["fixed_point_latents"] >= report["settled_latents"] > 0.5
    assert 0.5 < report["round_trip_bits_threshold_code"] <= 1.0
    assert [r["guidance"] for r in report["results"]] == [0.0, 2.0]
    for r in report["results"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["diversity"] > 0.0
    assert "reconstruction PSNR" in result.output and "settled" in result.output
    assert report["classifier_accuracy_on_real"] > 0.9


def test_evaluate_rejects_bad_guidance(tiny_bundle, tmp_path):
    result = CliRunner().invoke(
        evaluate, [str(tiny_bundle), "--guidance", "a,b", "--out", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "--guidance must be comma-separated numbers" in str(result.exception or result.output)


def test_evaluate_int8_beside_fp32(tiny_int8_bundle, tmp_path):
    """--precision int8 scores the int8 samples and compares them with fp32's, same seeds."""
    import numpy as np

    from bld_runtime.pipeline import Pipeline
    from bld_workflows.evaluate import pooled_psnr

    result = CliRunner().invoke(
        evaluate,
        [str(tiny_int8_bundle), "--precision", "int8", "--per-class", "2", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["precision"] == "int8" and report["backend"] == "cpu"
    (r,) = report["results"]
    classes = np.repeat(np.arange(10), 2)
    seeds = np.arange(20, dtype=np.uint64)
    int8, fp32 = (
        Pipeline.load(tiny_int8_bundle, precision=p).generate(seeds=seeds, classes=classes)
        for p in ("int8", "fp32")
    )
    same = (int8.images == fp32.images).all(axis=(1, 2, 3))
    assert r["identical_images_to_fp32"] == same.mean()
    assert r["psnr_vs_fp32_db"] == pooled_psnr(int8.images, fp32.images)
    assert "identical to fp32" in result.output
