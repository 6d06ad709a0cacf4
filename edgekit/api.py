"""The public Python API: ``train``, ``export``, ``compress`` and ``bench``. The CLI calls these.

Every stage checks what it wrote before the next one uses it: the export is compared with torch
on real samples, bundle files are hashed into the manifest, and every variant is measured against
the fp32 baseline on held-out data before it can be recommended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.benchmarks.gate import Budget
from edgekit.benchmarks.report import Report
from edgekit.errors import BadInputError
from edgekit.io.splits import resolve_data
from edgekit.pipeline.compress import CompressResult
from edgekit.pipeline.options import SHAPES_HINT, Progress
from edgekit.pipeline.options import quiet as _quiet

__all__ = [
    "SHAPES_HINT",
    "CompressResult",
    "Progress",
    "bench",
    "bench_remote",
    "build",
    "compress",
    "export",
    "search",
    "ship",
    "sign",
    "train",
]


# --------------------------------------------------------------------------------------- train
def train(
    name: str,
    out: str | Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    threads: int = 1,
    data_out: str | Path | None = None,
    overwrite: bool = False,
) -> Any:
    """Train reference model ``name`` and save it (TorchScript with its metadata) to ``out``;
    ``data_out`` also writes its held-out split as an ``.npz`` for ``--data``.

    ``out`` is checked before training: an existing file is replaced only with ``overwrite``, and
    the folder must take files. The saved file gets the usual mode (umask), not a private one."""
    import tempfile

    from edgekit import zoo
    from edgekit.io.atomic import atomic_write_bytes
    from edgekit.io.outputs import check_output_file, write_error

    zoo.spec(name)  # validates the name before any work
    out = Path(out)
    if data_out is not None and Path(data_out).resolve() == out.resolve():
        raise BadInputError("--data-out and -o name the same file; choose another --data-out")
    check_output_file(out, overwrite=overwrite)
    if data_out is not None:
        check_output_file(Path(data_out), overwrite=overwrite, flag="--data-out")
    result = zoo.train(name, seed=seed, epochs=epochs, threads=threads)
    # torch.jit.save aborts the whole process when the disk fills up (a C++ exception in a
    # destructor), so the model is serialised in the temp dir and copied into place by Python.
    with tempfile.TemporaryDirectory(prefix="edgekit-train-") as tmp:
        zoo.save(result, Path(tmp) / "model.pt")
        try:
            atomic_write_bytes(out, (Path(tmp) / "model.pt").read_bytes())
        except OSError as exc:
            raise write_error(exc, out.parent) or exc from exc
    if data_out is not None:
        from edgekit.io.data import save_npz

        save_npz(zoo.load_data(name, seed=seed).test, data_out)
    return result


# ------------------------------------------------------------------------------------- export
def export(
    model: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> Any:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch axis, checked against
    torch on real samples (reference data, ``--data``, or generated from ``--input-shape``)."""
    from edgekit.export.onnx import export_onnx
    from edgekit.io.models import load_model
    from edgekit.io.outputs import check_output_file, write_error

    check_output_file(out, inputs=[model, data], overwrite=overwrite)
    loaded = load_model(model, arch=arch, trust_pickle=trust_pickle, input_shape=input_shape)
    if loaded.format == "onnx":
        raise BadInputError(f"{model} is already ONNX; 'edgekit compress' takes it as it is")
    calib = "data" if data is not None or (loaded.meta or {}).get("zoo") else "random"
    splits = resolve_data(loaded, data, calib, seed=0)
    sample = splits.eval.head(16).inputs
    try:
        return export_onnx(loaded, Path(out), sample=sample, atol=atol)
    except Exception as exc:
        raise write_error(exc, Path(out).parent) or exc from exc


# ----------------------------------------------------------------------------------- compress
def compress(
    model: str | Path,
    *,
    steps: Sequence[object] = (),
    data: str | Path | None = None,
    calib: str = "data",
    calib_data: str | Path | None = None,
    target: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    threads: int | None = None,
    budget: Budget | None = None,
    batches: Sequence[int] = (1,),
    time_budget_s: float = 1.0,
    output_kind: str | None = None,
    decode: str | None = None,
    blank: int | None = None,
    metric: str | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    shapes: Mapping[str, Any] | None = None,
    with_memory: bool = True,
    command: str = "edgekit compress",
    progress: Progress = _quiet,
    extra_inputs: Sequence[str | Path] = (),
) -> CompressResult:
    """Compress ``model`` with ``steps`` (technique configs, in order), export, measure every
    variant against the fp32 baseline, and write a verified bundle atomically
    (:mod:`edgekit.pipeline.compress`).

    When the user set a budget and no compressed variant met it, the bundle is still
    written (every variant is in its report) and ``result.budget_error`` says why (CLI exit 3).

    ``output_kind`` (classifier, embedding, sequence, regression, raw), ``decode`` ("ctc" or
    "none") and ``blank`` override how fidelity is measured (detected from the graph and data
    otherwise); ``metric`` ("module:function") is the user's own metric, which then decides.
    ``threads`` defaults to the machine's physical cores.
    """
    from edgekit.pipeline import compress as pipeline
    from edgekit.pipeline.options import DataOptions, MeasureOptions, ModelOptions, OutputOptions

    job = pipeline.CompressJob(
        model=Path(model),
        steps=steps,
        out=Path(out) if out else None,
        overwrite=overwrite,
        seed=seed,
        target=target,
        budget=budget or Budget(),
        load=ModelOptions(arch=arch, trust_pickle=trust_pickle, input_shape=input_shape),
        data=DataOptions(data=data, calib=calib, calib_data=calib_data, shapes=shapes),
        output=OutputOptions(kind=output_kind, decode=decode, blank=blank, metric=metric),
        measure=MeasureOptions(batches=batches, time_budget_s=time_budget_s, threads=threads, with_memory=with_memory),
        command=command,
        extra_inputs=extra_inputs,
    )
    return pipeline.run(job, progress)


def exported_inputs(onnx_path: Path) -> list[Any]:
    from edgekit.runtimes.base import specs_from_onnx

    return specs_from_onnx(onnx_path)[0]


def build(
    bundle: str | Path,
    *,
    runtime: str = "tensorrt",
    shapes: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
) -> list[Path]:
    """On the device: verify the bundle, then build a TensorRT engine for every TensorRT variant,
    sharing one timing cache (``tensorrt/timing.cache``) so rebuilds skip kernel timing. The
    optimization profile is the one compress derived from the data (the manifest's
    ``model.shapes``); ``shapes`` overrides it per input."""
    from edgekit.bundle import manifest as mf
    from edgekit.bundle.tensorrt import build_plan
    from edgekit.export.shapes import from_described
    from edgekit.runtimes.tensorrt import build_engine

    if runtime != "tensorrt":
        raise BadInputError(
            f"'edgekit build' compiles TensorRT engines; got --runtime {runtime} (ONNX Runtime and "
            "OpenVINO load the bundle's files directly)"
        )
    root = Path(bundle)
    manifest = mf.read(root, verify=True)
    trt = [v for v in manifest.variants if v["runtime"] == "tensorrt"]
    if not trt:
        raise BadInputError(
            f"{root} has no TensorRT variants; compress with --runtime tensorrt (the default) or --fp16"
        )
    profiles = {**from_described(manifest.model.get("shapes")), **dict(shapes or {})}
    from edgekit.bundle.candidates import write_engine_meta
    from edgekit.runtimes.tensorrt import device_identity

    identity = device_identity()
    engines = []
    for v in trt:
        plan = build_plan(v, root, profiles)
        progress(f"building {plan['engine'].name} (TensorRT, fp16={plan['fp16']}, int8={plan['int8']})")
        engines.append(
            build_engine(
                plan["onnx"],
                plan["engine"],
                fp16=plan["fp16"],
                int8=plan["int8"],
                timing_cache=root / "tensorrt" / "timing.cache",
                shapes=plan["shapes"],
            )
        )
        if identity:
            write_engine_meta(engines[-1], identity)
    return engines


# -------------------------------------------------------------------------------------- bench
def bench(
    bundle: str | Path,
    *,
    runtimes: Sequence[str] | None = None,
    batches: Sequence[int] = (1,),
    threads: int | None = None,
    time_budget_s: float = 2.0,
    budget: Budget | None = None,
    output_kind: str | None = None,
    decode: str | None = None,
    blank: int | None = None,
    metric: str | None = None,
    out: str | Path | None = None,
    with_memory: bool = True,
    command: str = "edgekit bench",
    progress: Progress = _quiet,
    calibrate_timer: bool = False,
    shapes: Mapping[str, Any] | None = None,
) -> tuple[Report, Path]:
    """Verify a bundle's hashes, then measure its variants (all, or those on ``runtimes``)
    (:mod:`edgekit.pipeline.bench`). ``shapes`` (``{input: (min, opt, max)}``, as
    :func:`edgekit.export.shapes.parse_shapes` gives) adds timings at each of those shapes."""
    from edgekit.pipeline import bench as pipeline
    from edgekit.pipeline.options import MeasureOptions, OutputOptions

    job = pipeline.BenchJob(
        bundle=Path(bundle),
        runtimes=runtimes,
        budget=budget,
        output=OutputOptions(kind=output_kind, decode=decode, blank=blank, metric=metric),
        measure=MeasureOptions(batches=batches, time_budget_s=time_budget_s, threads=threads, with_memory=with_memory),
        out=Path(out) if out else None,
        command=command,
        calibrate_timer=calibrate_timer,
        shapes=shapes,
    )
    return pipeline.run(job, progress)


# ------------------------------------------------------------------------------------- search
def search(model: str | Path, **options: Any) -> Any:
    """Build and measure candidate variants of ``model`` and bundle the fastest faithful one;
    see :func:`edgekit.search.search` for the options. Returns a ``SearchResult``."""
    from edgekit.search import search as run

    return run(model, **options)


# ------------------------------------------------------------------------------------ devices
def bench_remote(
    host: str,
    bundle: str,
    args: Sequence[str],
    *,
    out: str | Path | None = None,
    ssh_options: Sequence[str] = (),
    remote_edgekit: str | None = None,
) -> tuple[Report, Path]:
    """Run ``edgekit bench BUNDLE ARGS --json`` on the device ``host`` (``bundle`` is a path
    there), bring its report back and write it (JSON, Markdown, plot) to ``out`` here."""
    from edgekit.benchmarks.report import write_all
    from edgekit.devices import remote
    from edgekit.io.atomic import atomic_dir

    lch = remote.launcher(host, ssh_options=ssh_options, remote_edgekit=remote_edgekit)
    report = Report.from_dict(lch.run(["bench", bundle, *args, "--json"]).json())
    report.device["address"] = lch.where
    report.device["bundle_on_device"] = bundle
    assert lch.host is not None
    out_dir = Path(out) if out else Path(f"{Path(bundle).name}.bench-{lch.host.host}")
    with atomic_dir(out_dir, overwrite=True) as tmp:
        write_all(report, tmp)
    return report, out_dir / "report.json"


def ship(bundle: str | Path, destination: str, **kw: Any) -> dict[str, Any]:
    """Copy a verified bundle to ``ssh://[user@]host[:port]:/path`` and verify it there
    (see :mod:`edgekit.bundle.ship`)."""
    from edgekit.bundle.ship import ship as _ship

    return _ship(bundle, destination, **kw)


def sign(bundle: str | Path, key: str | Path) -> Path:
    """Sign a bundle's manifest with an EC private key (OpenSSF model-signing); returns the signature."""
    from edgekit.bundle.sign import sign as _sign

    return _sign(bundle, key)
