"""Running a study's members on Dask: a local cluster of worker processes, or an existing one.

Every member (and every pretrained backbone) becomes one Dask task. A task builds the task data
once per worker process (cached), trains with one torch thread (so the numbers do not depend on
where it runs), writes its member folder atomically and returns the small record; the client only
collects records. The run store is written by the workers, one folder per member, each assembled
aside and renamed into place, so two attempts at the same member can never leave a mixed folder.

Faults: when a worker dies mid-task (killed, out of memory) the scheduler reruns its task on
another worker (``distributed.scheduler.allowed-failures`` times before it gives up); a member that
fails by itself (a NaN loss) returns a ``failed`` record, which is not an error, so it is recorded
once and never retried. Members that need a GPU ask for the ``GPU`` worker resource, so they only
run on workers that declare one.

Requires the optional extra ``polyculture[dist]`` (``dask[distributed]``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyculture.errors import ConfigError, ExecutionError
from polyculture.run.study import BackbonePlan, MemberPlan

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 10
"""How long to wait for an existing scheduler before giving up."""


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported (the ``polyculture[dist]`` extra)."""
    return importlib.util.find_spec("distributed") is not None


def _require_dask() -> None:
    if not dask_available():
        raise ConfigError(
            "running on Dask needs the dist extra (module 'distributed' is missing)",
            hint="pip install 'polyculture[dist]'",
        )


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None, gpus: int = 0) -> Iterator[Client]:
    """A Dask client: connected to ``scheduler``, or to a new local cluster of ``workers``.

    The local cluster runs one process per worker with one thread each (torch threads match);
    workers on a machine with ``gpus`` CUDA devices declare that many ``GPU`` resources.

    Raises
    ------
    ConfigError
        When ``dask.distributed`` is not installed.
    ExecutionError
        When nothing answers at ``scheduler`` within :data:`CONNECT_TIMEOUT_S` seconds.
    """
    _require_dask()
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise ExecutionError(
                f"could not reach a Dask scheduler at '{scheduler}' within "
                f"{CONNECT_TIMEOUT_S} s ({type(err).__name__})",
                hint="check the address (tcp://host:8786), or drop --scheduler to run locally",
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
    resources = {"GPU": gpus} if gpus else None
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
            resources=resources,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def dashboard_link(client: Client) -> str | None:
    """The dashboard address of the client's scheduler, when it serves one."""
    try:
        link = client.dashboard_link
    except (AttributeError, KeyError):
        return None
    return str(link) if link else None


def run_on_dask(
    client: Client,
    root: Path,
    study_json: dict[str, Any],
    jobs: list[MemberPlan] | list[BackbonePlan],
    device: str,
    on_done: Callable[[MemberPlan | BackbonePlan, dict[str, Any]], None],
) -> None:
    """Submit ``jobs`` to ``client`` and call ``on_done`` as each finishes (in finishing order).

    Raises
    ------
    ExecutionError
        When a task keeps killing its workers (the scheduler gave up on it).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    # Imported here: the runner imports this module.
    from polyculture.run.runner import worker_job

    needs_gpu = device.startswith("cuda")
    futures = {}
    for job in jobs:
        key = job.backbone_id if isinstance(job, BackbonePlan) else job.member_id
        future = client.submit(
            worker_job,
            str(root),
            study_json,
            job,
            device,
            # Unique per submission: a key seen before would return that earlier result.
            key=f"polyculture-{key}-{uuid.uuid4().hex}",
            pure=False,
            priority=_priority(job),
            resources={"GPU": 1} if needs_gpu else None,
        )
        futures[future] = job
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                record = future.result()
            except KilledWorker:
                raise ExecutionError(
                    f"Dask workers kept dying while training {job.describe()} (killed, or out "
                    "of memory)",
                    hint="rerun the same command to resume; give workers more memory",
                ) from None
            on_done(job, record)
    except BaseException:
        client.cancel(list(futures))
        raise


SLOW_FAMILIES = {"lstm": 3, "gru": 3, "transformer": 2, "minilm": 2}
"""Families whose members usually train longest per epoch (sequential steps, attention)."""


def _priority(job: MemberPlan | BackbonePlan) -> int:
    """Longest-expected jobs first, so that the last tasks to finish are short ones.

    Without durations we rank by what usually costs most: backbones (other members wait for
    them), then recurrent and attention families, then other torch members (by epochs), then
    scikit-learn members.
    """
    if isinstance(job, BackbonePlan):
        return 10_000
    if job.kind != "torch":
        return 0
    return 1 + job.train.epochs * (1 + SLOW_FAMILIES.get(job.model.family, 0))
