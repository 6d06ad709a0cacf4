"""Peak memory of a variant, measured in a fresh child process.

An in-process figure would mix in everything the parent already holds (other variants, torch,
data), so :func:`peak_rss` starts ``python -m edgekit.benchmarks.memory`` which imports the
runtime package, records its peak resident set size as the baseline, loads the model, runs a
few inferences on the given real feed and reports:

- ``peak_rss_mb``: the child's whole peak (interpreter + runtime + model + activations), what a
  deployment process with only this model would need;
- ``model_rss_mb``: that peak minus the post-import baseline, what the model itself adds
  (weights, the runtime's compiled graph, arena, activations at this batch size).

On Linux the peak is ``VmHWM`` from ``/proc/self/status``, not ``ru_maxrss``: Linux carries
``ru_maxrss`` over from the parent through fork and exec, so a child of a 400 MB parent would
report 400 MB before importing anything. ``VmHWM`` belongs to the child's own address space.
Elsewhere ``resource.getrusage(...).ru_maxrss`` is used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import BadInputError, EdgekitError

DEFAULT_RUNS = 5
DEFAULT_TIMEOUT_S = 600.0
_STDERR_TAIL = 2000


def peak_rss(
    runtime: str,
    model: Path,
    feed: Mapping[str, np.ndarray],
    threads: int = 1,
    *,
    batch: int | None = None,
    runs: int = DEFAULT_RUNS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    precision: str | None = None,
) -> dict[str, float]:
    """Peak memory of ``runtime`` running ``model`` on ``feed`` (real samples), in a child process.

    ``batch`` defaults to the number of samples in ``feed``; ``precision`` is the variant's
    (a bf16 variant runs with its bf16 hint, :func:`edgekit.runtimes.runtime_for`). Returns ``peak_rss_mb``,
    ``model_rss_mb`` and ``baseline_rss_mb`` (after imports), in MiB.
    """
    model = Path(model)
    if not model.exists():
        raise BadInputError(f"model file {model} does not exist; check the path")
    if not feed:
        raise BadInputError("peak_rss needs a feed of real samples (one array per model input)")
    lengths = {k: len(v) for k, v in feed.items()}
    if len(set(lengths.values())) != 1:
        raise BadInputError(f"feed arrays have different sample counts {lengths}")
    n = next(iter(lengths.values()))
    batch = n if batch is None else batch
    if not 1 <= batch <= n:
        raise BadInputError(f"batch must be between 1 and the {n} samples of the feed, got {batch}")
    what = f"memory probe of {model.name} on {runtime}"
    with tempfile.TemporaryDirectory(prefix="edgekit-mem-") as tmp:
        npz = Path(tmp) / "feed.npz"
        np.savez(npz, **{k: np.asarray(v) for k, v in feed.items()})  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        cmd = [
            sys.executable, "-m", "edgekit.benchmarks.memory",
            "--runtime", runtime, "--model", str(model.resolve()), "--batch", str(batch),
            "--threads", str(threads), "--npz", str(npz), "--runs", str(runs),
            *(["--precision", precision] if precision else []),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=_child_env(), cwd=tmp,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgekitError(f"{what} timed out after {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-_STDERR_TAIL:]
        error = BadInputError if proc.returncode == BadInputError.exit_code else EdgekitError
        raise error(f"{what} failed (exit {proc.returncode}): {tail}")
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return {k: float(v) for k, v in json.loads(line).items() if isinstance(v, (int, float))}
    raise EdgekitError(f"{what} printed no result; stdout: {proc.stdout[-_STDERR_TAIL:]}")


def _child_env() -> dict[str, str]:
    """The parent's environment, with edgekit importable even when it is not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _max_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def _probe(
    runtime: str, model: Path, batch: int, threads: int, npz: Path, runs: int, precision: str | None = None
) -> dict[str, float]:
    """The child's work: import, baseline, load, run, peak."""
    from edgekit.runtimes import canonical, runtime_for
    from edgekit.runtimes.base import TensorSpec

    with np.load(npz, allow_pickle=False) as data:
        feed = {k: np.ascontiguousarray(data[k][:batch]) for k in data.files}
    name = canonical(runtime)
    rt_kwargs: dict[str, object] = {"threads": threads}
    if name == "torch":  # TorchScript records no input specs: take them from the feed
        rt_kwargs["input_specs"] = [
            TensorSpec(k, ("batch", *v.shape[1:]), v.dtype.name) for k, v in feed.items()
        ]
    rt = runtime_for(name, precision, **rt_kwargs)
    importlib.import_module(rt.module)  # the runtime package is part of the baseline, not the model
    baseline = _max_rss_mb()
    rt.load(model)
    for _ in range(max(runs, 1)):
        rt.run(feed)
    peak = _max_rss_mb()
    return {
        "peak_rss_mb": round(peak, 2),
        "model_rss_mb": round(peak - baseline, 2),
        "baseline_rss_mb": round(baseline, 2),
        "batch": batch,
        "runs": max(runs, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgekit.benchmarks.memory", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--npz", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--precision", default=None)
    args = parser.parse_args(argv)
    try:
        result = _probe(args.runtime, args.model, args.batch, args.threads, args.npz, args.runs, args.precision)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
