"""The benchmark report as a table (rich) and a plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from bld_runtime.errors import BldError


def _ms(seconds: float | None) -> str:
    return (
        "-"
        if seconds is None
        else f"{seconds * 1e3:.2f}"
        if seconds < 1
        else f"{seconds * 1e3:.0f}"
    )


def render_table(report: dict, console) -> None:
    from rich.table import Table

    b = report["bundle"]
    peak = report["gemm_peak"]
    title = (
        f"{b['path']}: {b['image'][0]}x{b['image'][1]}x{b['image'][2]}, "
        f"{b['latent'][0]}x{b['latent'][1]} bits, {b['steps']} steps, "
        f"{report['settings']['threads']} threads"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "batch",
        "backend",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "img/s",
        "step ms",
        "sample ms",
        "decode ms",
        "overhead",
        "GFLOP/s",
        "% peak",
        "peak RSS",
        f"vs {report['baseline'] or '-'}",
    ):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in report["results"]:
        lat, st = r["latency"], r["stages"]
        table.add_row(
            str(r["batch"]),
            r["backend"],
            _ms(lat["p50"]),
            _ms(lat["p90"]),
            _ms(lat["p99"]),
            _ms(lat["max"]),
            f"{r['images_per_second']:.2f}",
            _ms(st["step_model"]["p50"]),
            _ms(st["step_sampling"]["p50"]),
            _ms(st["decode"]["p50"]),
            f"{r['overhead_share']:.1%}",
            "-" if r["step_gflops_per_second"] is None else f"{r['step_gflops_per_second']:.1f}",
            "-" if r["gemm_peak_share"] is None else f"{r['gemm_peak_share']:.0%}",
            "-" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**20:.0f} MB",
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        )
    console.print(table)
    if peak:
        engines = ", ".join(f"{e['engine']} {e['gflops']:.1f}" for e in peak["engines"])
        console.print(
            f"GEMM peak (fp32 {peak['size']}^3, {peak['threads']} threads): "
            f"{peak['gflops']:.1f} GFLOP/s ({engines}). step ms / sample ms: median "
            "model and sampling time of one denoising step; overhead: everything but "
            "the model calls."
        )
    for c in report["backends"]:
        if not c["available"]:
            console.print(f"[yellow]{c['name']}: unavailable[/yellow] ({c['reason']})")


def write_plot(report: dict, path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BldError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["backend"] for r in report["results"]):
        rows = sorted(
            (r for r in report["results"] if r["backend"] == name), key=lambda r: r["batch"]
        )
        x = [r["batch"] for r in rows]
        p50 = [r["latency"]["p50"] * 1e3 for r in rows]
        p90 = [r["latency"]["p90"] * 1e3 for r in rows]
        (line,) = left.plot(x, p50, marker="o", label=name)
        left.fill_between(x, p50, p90, color=line.get_color(), alpha=0.2)
        right.plot(x, [r["images_per_second"] for r in rows], marker="o", label=name)
    for ax, label in (
        (left, "latency per generation, ms (p50, band to p90)"),
        (right, "images per second"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    b = report["bundle"]
    fig.suptitle(
        f"{Path(b['path']).name}: {b['image'][0]}x{b['image'][1]}, {b['steps']} steps, "
        f"{report['settings']['threads']} threads"
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
