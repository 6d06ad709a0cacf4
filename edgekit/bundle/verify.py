"""Checks a bundle where it runs (on the device after a ship, or anywhere): every SHA-256 of the
manifest, the signature, the runtime packages against the manifest's toolchain, a smoke inference
against the fp32 outputs recorded at compress time, and the fidelity gate of every variant on the
bundle's own evaluation samples, here.

``receive`` is the device end of ``edgekit ship``: it unpacks one tar stream into a temporary
directory beside the destination, checks it as above and renames it into place, so an interrupted
or refused ship leaves the destination as it was.
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
import tarfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgekit.errors import BadInputError, IntegrityError

FP32_OUTPUTS = "data/fp32_outputs.npz"
SMOKE_N = 8
SMOKE_RTOL, SMOKE_ATOL = 1e-3, 1e-4


def manifest_sha256(root: Path) -> str:
    from edgekit.bundle.manifest import MANIFEST
    from edgekit.io.atomic import sha256_file

    return sha256_file(root / MANIFEST)


def record_fp32_outputs(root: Path, fp32_onnx: Path, inputs: dict[str, np.ndarray], threads: int = 1) -> Path:
    """At compress time: the fp32 model's outputs on the first ``SMOKE_N`` evaluation samples."""
    from edgekit.runtimes import get_runtime

    feed = {k: v[:SMOKE_N] for k, v in inputs.items()}
    out = np.asarray(get_runtime("onnxruntime", threads=threads).load(fp32_onnx).run(feed)[0])
    path = root / FP32_OUTPUTS
    with open(path, "wb") as f:
        np.savez(f, outputs=out)
    return path


def check_toolchain(manifest: Any) -> dict[str, Any]:
    """The device's runtime packages against the manifest's. A runtime the bundle needs here
    (ONNX Runtime for the fp32 reference, and the target's runtime unless it is TensorRT, which
    only a GPU device has) that is missing is an error naming the install command."""
    from edgekit.devices.detect import RUNTIME_PACKAGES, target_runtime

    built = manifest.toolchain
    runtimes = sorted({v["runtime"] for v in manifest.variants})
    needed = {"onnxruntime"}
    try:
        target = target_runtime(manifest.target)
        if target != "tensorrt":
            needed.add(target)
    except BadInputError:
        pass
    out: dict[str, Any] = {"same": {}, "differs": {}, "missing": {}}
    for rt in runtimes:
        pkg = RUNTIME_PACKAGES.get(rt, rt)
        want = built.get(pkg)
        try:
            have = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            if rt in needed:
                pin = f"=={want}" if want else ""
                raise BadInputError(
                    f"this device has no {pkg}, which the bundle needs (built with {pkg} {want or '?'}); "
                    f"install it on the device: pip install {pkg}{pin}"
                ) from None
            out["missing"][pkg] = want
            continue
        (out["same"] if have == want else out["differs"])[pkg] = (
            have if have == want else {"bundle": want, "device": have}
        )
    return out


def smoke(root: Path, manifest: Any, threads: int = 1) -> dict[str, Any]:
    """Run the fp32 model on the first evaluation samples and compare with the outputs recorded
    at compress time; a mismatch is an :class:`IntegrityError`."""
    from edgekit.io.data import load_npz
    from edgekit.runtimes import get_runtime

    fp32 = next(v for v in manifest.variants if v["name"] == "ort-fp32")
    rt = get_runtime("onnxruntime", threads=threads).load(root / fp32["artifact"])
    ds = load_npz(root / "data" / "eval.npz", task=manifest.model.get("task", "unknown"))
    arrays = ds.bind([s.name for s in rt.inputs])
    recorded_path = root / FP32_OUTPUTS
    if not recorded_path.is_file():
        rt.run({k: v[:1] for k, v in arrays.items()})
        return {
            "ran": True,
            "compared": False,
            "reason": f"the bundle has no {FP32_OUTPUTS} (made by an older edgekit)",
        }
    with np.load(recorded_path) as z:
        recorded = z["outputs"]
    n = len(recorded)
    got = np.asarray(rt.run({k: v[:n] for k, v in arrays.items()})[0])
    same_shape = got.shape == recorded.shape
    err = float(np.max(np.abs(got.astype(np.float64) - recorded))) if same_shape else float("inf")
    if not same_shape or not np.allclose(got, recorded, rtol=SMOKE_RTOL, atol=SMOKE_ATOL):
        raise IntegrityError(
            f"smoke inference of {fp32['artifact']} on this device differs from the fp32 outputs recorded at "
            f"compress time (max |Δ| = {err:.3g} on {n} samples); the runtime here computes something else"
        )
    return {"ran": True, "compared": True, "samples": n, "max_abs_err": err}


def gate_here(root: Path, manifest: Any, threads: int = 1) -> list[dict[str, Any]]:
    """The fidelity gate of every variant, run here on the bundle's evaluation samples against the
    fp32 model run here, next to the verdict the build host gave."""
    from edgekit.benchmarks.gate import Budget
    from edgekit.benchmarks.harness import measure
    from edgekit.bundle.candidates import candidates
    from edgekit.io.data import Dataset, load_npz

    task = manifest.model.get("task", "unknown")
    ds = load_npz(root / "data" / "eval.npz", task=task)
    ds = Dataset(inputs=ds.bind(manifest.model.get("inputs") or ds.names), labels=ds.labels, task=task, name="eval")
    cands = candidates(root, manifest)
    rows = measure(cands, ds, baseline="ort-fp32", budget=Budget(**manifest.budget), batches=(), with_memory=False)
    built = _build_host_verdicts(root / manifest.report)
    return [
        {
            "name": r.name,
            "deployable_here": r.deployable,
            "reason": r.rejected_reason,
            "fidelity": r.fidelity,
            "metric_drop": r.metric_drop,
            "deployable_on_build_host": built.get(r.name),
        }
        for r in rows[1:]
    ]


def _build_host_verdicts(report: Path) -> dict[str, bool]:
    try:
        d = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    return {v["name"]: bool(v.get("deployable")) for v in d.get("variants", [])}


def verify(
    root: str | Path,
    *,
    pubkey: str | Path | None = None,
    require_signature: bool = False,
    gate: bool = True,
    threads: int = 1,
) -> dict[str, Any]:
    """Every check above; raises a one-line :class:`BadInputError` on the first that fails and
    returns what was checked."""
    from edgekit.bundle import manifest as mf
    from edgekit.bundle import sign
    from edgekit.devices.probe import facts

    root = Path(root)
    if require_signature and pubkey is None:
        raise BadInputError("--require-signature needs the signer's public key: --pubkey KEY.pub")
    manifest = mf.read(root, verify=True)
    if pubkey is not None:
        sign.verify(root, pubkey)
        signature = "verified"
    else:
        signature = "signed, not checked (no --pubkey)" if sign.is_signed(root) else "not signed"
    toolchain = check_toolchain(manifest)
    result: dict[str, Any] = {
        "bundle": str(root),
        "manifest_sha256": manifest_sha256(root),
        "files_verified": len(manifest.files),
        "signature": signature,
        "toolchain": toolchain,
        "smoke": smoke(root, manifest, threads),
        "device": facts(),
    }
    if gate:
        result["variants"] = gate_here(root, manifest, threads)
    return result


def probe(root: str | Path, **kw: Any) -> dict[str, Any]:
    """For ``ship``: whether a bundle is installed at ``root`` and passes :func:`verify`."""
    root = Path(root)
    if not (root / "manifest.json").is_file():
        return {"present": False}
    try:
        return {"present": True, "ok": True, **verify(root, **kw)}
    except BadInputError as exc:
        sha = manifest_sha256(root) if (root / "manifest.json").is_file() else None
        return {"present": True, "ok": False, "error": str(exc), "manifest_sha256": sha}


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def receive(dest: str | Path, stream: IO[bytes], **kw: Any) -> dict[str, Any]:
    """Unpack a bundle tar ``stream`` beside ``dest``, verify it, and rename it to ``dest``
    (replacing a previous bundle there). Anything short of a verified bundle leaves ``dest`` as it was."""
    from edgekit.io.atomic import atomic_dir

    dest = Path(dest)
    if dest.exists() and not (dest / "manifest.json").is_file() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInputError(
            f"{dest} on the device exists and is not an edgekit bundle; ship to a new or empty directory"
        )
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, _interrupted)  # a dropped connection still removes the temporary copy
    with atomic_dir(dest, overwrite=True) as tmp:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadInputError(
                f"the bundle stream broke off or is not a tar archive ({exc}); nothing was installed"
            ) from None
        result = verify(tmp, **kw)
    result["bundle"] = str(dest)
    return result
