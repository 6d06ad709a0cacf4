"""Where candidates are built and measured.

``local`` (default): builds in a process pool (``concurrent.futures``, spawned workers so no
OpenMP state is inherited); measurement in this process, serial and interleaved, after the builds
of a level have finished, so timings never share cores with a build.

``ray``: builds as Ray tasks (one CPU each) and each measurement as a Ray task that holds the
device's custom resource ``{"device:NAME": 1}`` (one measurement at a time per device) and as
many CPUs as the timed runtimes use, submitted only after the level's builds are done.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from edgekit.errors import BadInputError
from edgekit.search.space import Job, build


def _worker_setup() -> None:
    # A spawned worker inherits "spawn" as its default start method; libraries that start a helper
    # process (OpenVINO's telemetry sender does, on every send) would then boot a new interpreter
    # in the current directory, which a quantization step may have made a temporary one and removed.
    # Builds behave as in any Linux process: helpers fork.
    multiprocessing.set_start_method("fork", force=True)


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup
        )

    def builds(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        futures = {self._pool.submit(build, j): j for j in jobs}
        for f in as_completed(futures):
            yield futures[f], f.result()

    def measure(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None, device: str, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise BadInputError("--executor ray needs Ray: pip install 'edgekit[ray]'") from None
        self._ray = ray
        self._device = f"device:{device}"
        self._threads = threads
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=max(2, threads), include_dashboard=False, resources={self._device: 1}, log_to_driver=False
                )
                self._started = True
        if ray.cluster_resources().get(self._device, 0) < 1:
            raise BadInputError(
                f"the Ray cluster has no resource {self._device!r}; start the device's node with "
                f"--resources='{{\"{self._device}\": 1}}' or pass --device NAME"
            )
        self._build = ray.remote(num_cpus=1)(build)

    def builds(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        refs = {self._build.remote(j): j for j in jobs}
        pending = list(refs)
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            yield refs[done[0]], self._ray.get(done[0])

    def measure(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        task = self._ray.remote(num_cpus=self._threads, resources={self._device: 1})(fn)
        return self._ray.get(task.remote(*args, **kwargs))

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make(kind: str, *, jobs: int, address: str | None, device: str, threads: int) -> Any:
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "ray":
        return RayExecutor(address, device, threads)
    raise BadInputError(f"--executor {kind!r} is unknown; choose local or ray")
