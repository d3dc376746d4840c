"""The study runner: expand a study, train the missing members, write the run directory.

Members train in worker processes (one torch thread each, so the numbers do not depend on how
many workers run) or in this process when one worker is asked for. Each worker builds the task
itself from the data spec (deterministic), trains a member, writes its folder atomically and
reports back a small summary. Finished members (DONE marker present) are skipped, so a killed or
extended study resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w
import torch

from polyculture.data.builders import DataSpec, build_task
from polyculture.data.task import Task
from polyculture.errors import ConfigError, ExecutionError
from polyculture.measure.cost import cost_profile, member_cost, stored_size
from polyculture.measure.performance import (
    ANSWER_METRICS,
    METRICS,
    answer_metrics,
    classification_metrics,
)
from polyculture.plugins import load_entry_point_plugins, load_plugins
from polyculture.run.analyze import analyze_run
from polyculture.run.distributed import dashboard_link, dask_available, dask_client, run_on_dask
from polyculture.run.emergence import Sweep, analyze_emergence, check_sweep_metrics
from polyculture.run.fairness import fairness_after_run
from polyculture.run.results import RunResults
from polyculture.run.select import select_after_run
from polyculture.run.store import (
    PREDICTION_COLUMNS,
    RunStore,
    package_versions,
    prediction_frame,
    write_optional_table,
    write_table,
    write_text,
)
from polyculture.run.study import (
    BackbonePlan,
    MemberPlan,
    Study,
    expand,
    load_study,
    load_suite,
)
from polyculture.train.backbone import (
    AdaptedModel,
    backbone_features,
    feature_task,
    load_backbone,
    prepare_task,
    pretrain_backbone,
)
from polyculture.train.member import (
    COST_EXAMPLES,
    Adaptation,
    MemberResult,
    RobustnessCheck,
    resolve_device,
    train_member,
)
from polyculture.train.tensorboard import log_member
from polyculture.zoo.base import ZooModel, final_layer

ProgressCallback = Callable[[MemberPlan, dict[str, Any], bool], None]
"""Called once per member with its plan, its record, and whether it was skipped (already done)."""


def default_workers(pending: int) -> int:
    """One worker per CPU core available to us, at most one per pending member."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, pending))


def run_study(
    study: Study | str | Path | dict[str, Any],
    out: str | Path = "runs",
    overrides: list[str] = (),  # type: ignore[assignment]
    *,
    workers: int | None = None,
    device: str | None = None,
    on_member: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    scheduler: str | None = None,
    on_cluster: Callable[[str], None] | None = None,
    report: bool = True,
) -> RunResults:
    """Run a study and return its results (the Python API of ``polyculture run``).

    Parameters
    ----------
    study
        A :class:`Study`, a built-in study name, a TOML path or a dict.
    out
        Parent folder; the run directory is ``out / study.name``.
    overrides
        ``key=value`` strings, as ``--set`` on the command line.
    workers
        Worker processes; default from the study (0 = one per core). 1 trains in this process.
    device
        ``auto``, ``cpu`` or ``cuda[:i]``; default from the study.
    on_member
        Progress callback, called as each member finishes or is found finished.
    on_start
        Called once with (members to train, members already done).
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``); default from the study.
        Without one, several workers run on a local Dask cluster when ``polyculture[dist]`` is
        installed (``execution.engine``), else in a local process pool.
    on_cluster
        Called with a one-line description of the Dask cluster used (workers, dashboard).
    report
        Write ``report.html`` (callers that run many intermediate studies skip it).

    The run directory ends with ``report.html`` (see :func:`polyculture.report.build_report`).

    Returns
    -------
    RunResults
        The tables of the run directory.

    Examples
    --------
    >>> import tempfile
    >>> results = run_study("mnist1d", tempfile.mkdtemp(), ["zoo=[{family='logreg'}]",
    ...                     "seeds=[0]"], workers=1)
    >>> results.members[["family", "status"]].values.tolist()
    [['logreg', 'ok']]
    """
    study = load_study(study, list(overrides))
    with contextlib.ExitStack() as stack:
        return _run_loaded(
            study,
            Path(out),
            workers,
            device,
            on_member,
            on_start,
            scheduler,
            on_cluster,
            stack,
            report,
        )


def run_suite(
    source: str | Path,
    out: str | Path = "runs",
    overrides: list[str] = (),  # type: ignore[assignment]
    *,
    on_part: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> list[RunResults]:
    """Run every study of a suite into ``out / suite.name / study.name``, then its report.

    Every study is loaded and validated (with ``overrides`` applied to each) before any trains.
    ``options`` are passed to :func:`run_study` (``workers``, ``device``, ``on_member``, ...);
    ``on_part`` is called with (study name, index, count) before each study runs. The suite
    folder gets ``suite.json`` and a combined ``report.html`` with each study's emergence
    results and links to the studies' own reports.

    Examples
    --------
    >>> from polyculture.run.study import load_suite
    >>> [str(part) for part in load_suite("emergence")[1]][:2]
    ['emergence-modular-addition', 'emergence-addition']
    """
    from polyculture.report import build_suite_report

    loaded = load_suite(source)
    if loaded is None:
        raise ConfigError(
            f"'{source}' is a study, not a suite", hint="run it with run_study instead"
        )
    suite, parts = loaded
    studies = [load_study(part, list(overrides)) for part in parts]
    names = [study.name for study in studies]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"suite '{suite.name}' holds two studies named the same ({', '.join(names)})",
            hint="give every study of the suite its own name",
        )
    folder = Path(out) / suite.name
    results = []
    for index, study in enumerate(studies):
        if on_part is not None:
            on_part(study.name, index, len(studies))
        results.append(run_study(study, folder, **options))
    write_text(
        folder / "suite.json",
        _json({"name": suite.name, "description": suite.description, "studies": names}),
    )
    build_suite_report(folder)
    return results


def _run_loaded(
    study: Study,
    out: Path,
    workers: int | None,
    device: str | None,
    on_member: ProgressCallback | None,
    on_start: Callable[[int, int], None] | None,
    scheduler: str | None,
    on_cluster: Callable[[str], None] | None,
    stack: contextlib.ExitStack,
    report: bool = True,
) -> RunResults:
    execution = study.execution
    scheduler = scheduler if scheduler is not None else execution.scheduler
    device_name = check_device(device or execution.device)
    client = None
    if scheduler is not None:  # reach it before anything is built or written
        client = stack.enter_context(dask_client(0, scheduler))
    task = build_task(study.data)  # fails on bad data before any file is written
    plans = expand(study, task.fingerprint())
    _check_inputs_readable(task, plans)
    check_sweep_metrics(list(study.sweeps), task_metrics(task))
    # A plugin metric that raises should stop the study now, not after every member trained.
    y = task.test.y.numpy()
    uniform = np.full((len(y), task.num_classes), 1.0 / task.num_classes)
    classification_metrics(y, uniform, with_ci=False, groups=task.test.group_labels())
    store = RunStore(out / study.name)
    started = time.perf_counter()
    _write_resolved_study(store, study)
    write_text(store.root / "task.json", _json(task.summary() | _references(task)))
    store.clean_partial()

    pending = [plan for plan in plans if not store.is_done(plan.member_id)]
    done = [plan for plan in plans if store.is_done(plan.member_id)]
    if on_start is not None:
        on_start(len(pending), len(done))
    for plan in done:
        if on_member is not None:
            on_member(plan, store.member_record(plan.member_id), True)

    n_workers = workers if workers is not None else execution.workers
    n_workers = default_workers(len(pending)) if n_workers == 0 else n_workers
    backbones = list({p.backbone.backbone_id: p.backbone for p in pending if p.backbone}.values())
    backbones = [b for b in backbones if not store.is_backbone_done(b.backbone_id)]
    use_local_dask = (
        client is None
        and len(pending) > 1
        and n_workers > 1
        and (execution.engine == "dask" or (execution.engine == "auto" and dask_available()))
    )
    if use_local_dask:
        gpus = (
            torch.cuda.device_count() if device_name != "cpu" and torch.cuda.is_available() else 0
        )
        client = stack.enter_context(dask_client(n_workers, None, gpus))
    try:
        if client is not None and pending and on_cluster is not None:
            on_cluster(_cluster_line(client, scheduler))
        if backbones:
            _run_jobs(store, study, backbones, device_name, n_workers, task, None, client)
        if pending:
            _run_jobs(store, study, pending, device_name, n_workers, task, on_member, client)
    finally:
        _ADAPTED.clear()  # loaded backbones and feature tasks are this run's only
        stack.close()  # the Dask client and any local cluster are done once members are

    assemble_tables(store, task, plans)
    analyze_run(
        store,
        seed=study.evaluate.bootstrap_seed,
        ecosystems={eco.name: eco.models for eco in study.ecosystems},
    )
    analyze_emergence(
        store,
        [Sweep.from_spec(sweep) for sweep in study.sweeps],
        seed=study.evaluate.bootstrap_seed,
    )
    select_after_run(store.root, seed=study.evaluate.bootstrap_seed)
    fairness_after_run(store.root, seed=study.evaluate.bootstrap_seed)
    if report:
        _write_report(store)
    write_text(
        store.root / "timing.json",
        _json(
            {
                "wall_seconds": time.perf_counter() - started,
                "workers": n_workers,
                "trained": len(pending),
                "reused": len(done),
            }
        ),
    )
    return RunResults.load(store.root)


def _check_inputs_readable(task: Task, plans: list[MemberPlan]) -> None:
    """Run each family's ``prepare`` hook once before anything is written or trained.

    A family that reads inputs its own way (the pretrained encoder's tokenizer) then fails early,
    e.g. when its optional extra is not installed, instead of in every worker.
    """
    families = {plan.model.family for plan in plans if plan.backbone is None}
    families |= {plan.backbone.spec.family for plan in plans if plan.backbone is not None}
    for name in sorted(families):
        prepare_task(task, name)


def _without_none(value: Any) -> Any:
    """TOML has no null: drop ``None`` values (they are the defaults of optional keys)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


def check_device(name: str) -> str:
    """Validate a device name before anything trains (a bad one would fail every member).

    Examples
    --------
    >>> check_device("cpu")
    'cpu'
    """
    if name == "auto":
        return name
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device '{name}'", hint="use auto, cpu or cuda[:index]"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(
                f"device '{name}' is not available ({count} CUDA device(s) visible)",
                hint="use --device auto or --device cpu",
            )
    elif device.type != "cpu":
        raise ConfigError(f"device '{name}' is not supported", hint="use auto, cpu or cuda[:index]")
    return name


def task_metrics(task: Task) -> list[str]:
    """Names of the per-split metrics every member of ``task`` gets."""
    grouped = task.test.groups is not None
    names = [
        name for name in METRICS.names_in_order() if grouped or not METRICS.get(name).needs_groups
    ]
    return [*names, *(ANSWER_METRICS if task.answer_length > 1 else ())]


def _write_report(store: RunStore) -> None:
    # Imported here: the report stage reads run directories through this package.
    from polyculture.report import build_report

    build_report(store.root)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def _references(task: Task) -> dict[str, Any]:
    return {
        "reference_accuracy": task.reference_accuracy,
        "reference_source": task.reference_source,
    }


def _write_resolved_study(store: RunStore, study: Study) -> None:
    resolved = study.model_dump(mode="json", exclude_none=True)
    resolved["versions"] = package_versions()
    write_text(store.root / "study.toml", tomli_w.dumps(_without_none(resolved)))


def train_and_store_backbone(
    store: RunStore, task: Task, study: Study, plan: BackbonePlan, device: str
) -> dict[str, Any]:
    """Pretrain (or load) one backbone, compute its features, write its folder; its record."""
    spec = plan.spec
    prepared = prepare_task(task, spec.family)
    source = _source_task(plan)
    settings: dict[str, Any] = {}
    if spec.method == "contrastive":
        from polyculture.train.pretrain import PretrainSpec

        settings["pretrain"] = PretrainSpec.model_validate(spec.pretrain)
    result = pretrain_backbone(
        plan.model,
        spec.method,
        prepared,
        spec.seed,
        resolve_device(device),
        train=plan.train,
        source=source,
        layer=spec.layer,
        **settings,
    )
    features: dict[str, np.ndarray] = {}
    if result.status == "ok":
        network = load_backbone(plan.model, prepared, result.weights, source)
        features = backbone_features(network, prepared, result.layer, resolve_device(device))
    record = {
        "backbone_id": plan.backbone_id,
        "name": spec.name,
        "family": spec.family,
        "params": spec.params,
        "method": spec.method,
        "seed": spec.seed,
        "status": result.status,
        "reason": result.reason,
        "layer": result.layer,
        "feature_dim": int(features["train"].shape[1]) if features else 0,
        "pretrain_seconds": result.seconds,
    }
    store.write_backbone(
        plan.backbone_id,
        record,
        weights=result.weights,
        features=features,
        history=result.history,
        error_detail=result.error_detail,
    )
    return record


def _probe_cost(
    store: RunStore, task: Task, backbone: BackbonePlan, layer: str
) -> Callable[[Any, Any], dict[str, Any]]:
    """The cost callback of a probe member: backbone and head measured together.

    A probe serves raw inputs, so its latency, memory and size include computing the frozen
    backbone's features, not just the head on stored features.
    """

    def measure(head: Any, _features: Any) -> dict[str, Any]:
        # Only the timed rows are prepared (MiniLM would otherwise re-tokenize every split).
        timed = task.test.subset(torch.arange(min(COST_EXAMPLES, len(task.test))))
        few = dataclasses.replace(task, train=timed, val=timed, test=timed, shifted={})
        prepared = prepare_task(few, backbone.spec.family)
        network = load_backbone(
            backbone.model,
            prepared,
            store.backbone_weights(backbone.backbone_id),
            _source_task(backbone),
        ).eval()
        inputs = prepared.test.x  # (n, *backbone input shape)
        if isinstance(head, ZooModel):
            return member_cost(AdaptedModel(network, layer, head, None), inputs)

        # As a module, so memory is tracked the way it is for every torch member.
        serving = _ClassicalProbe(network, layer, head)
        size = stored_size(network) + stored_size(head)
        return cost_profile(serving, inputs, threads=1, device="cpu", size_bytes=size).record()

    return measure


class _ClassicalProbe(torch.nn.Module):
    """A frozen backbone and a scikit-learn head on its features, as one module (for timing)."""

    def __init__(self, backbone: ZooModel, layer: str, head: Any) -> None:
        super().__init__()
        self.backbone, self.layer, self.head = backbone, layer, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.representations(x)[self.layer]  # (b, d)
        flat = features.reshape(len(features), -1).float().numpy()
        return torch.from_numpy(self.head.predict_proba(flat))  # (b, classes)


def _source_task(plan: BackbonePlan) -> Task | None:
    """The source task of a supervised backbone, prepared for its family (else ``None``)."""
    spec = plan.spec
    return None if spec.source is None else prepare_task(build_task(spec.source), spec.family)


_ADAPTED: dict[tuple[str, str], Task | Adaptation] = {}
"""Per process: feature tasks (probes) and loaded backbones (fine-tuning) by backbone id."""


def _train_plan(
    store: RunStore, task: Task, study: Study, plan: MemberPlan, device: str
) -> MemberResult:
    """Train one member of the plan, adapting its backbone when it has one."""
    common: dict[str, Any] = {
        "probe_size": study.evaluate.probe_size,
        "device": device,
        "shard": plan.shard,
        "data_fraction": plan.data_fraction,
        "robustness": _robustness_check(study),
        "cost": member_cost,
    }
    if plan.backbone is None:
        return train_member(task, plan.model, plan.train, plan.seed, **common)
    backbone = plan.backbone
    record = store.backbone_record(backbone.backbone_id)
    if record["status"] != "ok":
        return MemberResult(
            status="failed", reason=f"backbone '{backbone.spec.name}' failed: {record['reason']}"
        )
    key = (backbone.backbone_id, plan.adapt)
    if plan.adapt == "probe":
        if key not in _ADAPTED:
            _ADAPTED[key] = feature_task(task, store.backbone_features(backbone.backbone_id))
        features = _ADAPTED[key]
        assert isinstance(features, Task)
        return train_member(
            features,
            plan.model,
            plan.train,
            plan.seed,
            input_representation=f"backbone.{record['layer']}",
            **(common | {"cost": _probe_cost(store, task, backbone, str(record["layer"]))}),
        )
    prepared = prepare_task(task, backbone.spec.family)
    if key not in _ADAPTED:
        source = _source_task(backbone)
        network = load_backbone(
            backbone.model, prepared, store.backbone_weights(backbone.backbone_id), source
        )
        _ADAPTED[key] = Adaptation(network, record["layer"])
    adaptation = _ADAPTED[key]
    assert isinstance(adaptation, Adaptation)
    adaptation = dataclasses.replace(adaptation, finetune_layers=plan.finetune_layers)
    return train_member(
        prepared, plan.model, plan.train, plan.seed, adaptation=adaptation, **common
    )


def _robustness_check(study: Study) -> RobustnessCheck | None:
    evaluate = study.evaluate
    if evaluate.robust_epsilon == 0:
        return None
    return RobustnessCheck(evaluate.robust_epsilon, evaluate.robust_steps, evaluate.robust_size)


def train_and_store(
    store: RunStore, task: Task, study: Study, plan: MemberPlan, device: str
) -> dict[str, Any]:
    """Train one member, compute its metrics, write its folder; returns its record."""
    result = _train_plan(store, task, study, plan, device)
    record = member_record(plan, result, task, study.evaluate.bootstrap_seed)
    store.write_member(
        plan.member_id,
        record,
        probabilities=result.probabilities,
        representations=result.representations,
        weights=result.weights,
        history=result.history,
        error_detail=result.error_detail,
        attention=result.attention,
    )
    if len(result.history) or result.representations:
        # The display name is user text: keep only characters that are safe in a folder name.
        folder = re.sub(r"[^A-Za-z0-9_.,=()-]", "_", plan.label).lstrip(".")
        layer = final_layer(list(result.representations)) if result.representations else ""
        probe_labels = task.test.y[: study.evaluate.probe_size].tolist()
        log_member(
            store.root / "tensorboard" / f"{folder}-seed{plan.seed}-{plan.member_id}",
            result.history,
            result.representations.get(layer),
            [task.class_names[c] for c in probe_labels],
            tag=layer or "final_layer",
        )
    return record


def member_record(
    plan: MemberPlan, result: MemberResult, task: Task, bootstrap_seed: int
) -> dict[str, Any]:
    """The ``member.json`` content: spec, status, cost and metrics per evaluation split."""
    metrics: dict[str, dict[str, float]] = {}
    for split_name, split in task.eval_splits():
        if split_name in result.probabilities:
            y, proba = split.y.numpy(), result.probabilities[split_name]
            metrics[split_name] = classification_metrics(
                y, proba, seed=bootstrap_seed, groups=split.group_labels()
            )
            if task.answer_length > 1:
                metrics[split_name] |= answer_metrics(
                    y, proba, split.instance_ids().numpy(), task.answer_length, seed=bootstrap_seed
                )
    examples_seen = result.steps * min(plan.train.batch_size, max(1, result.train_rows))
    return {
        "member_id": plan.member_id,
        "name": plan.label,
        "family": plan.model.family,
        "params": plan.model.params,
        "kind": plan.kind,
        "seed": plan.seed,
        "backbone": plan.backbone.spec.name if plan.backbone else "",
        "adapt": plan.adapt if plan.backbone else "",
        "shard": f"{plan.shard[0] + 1}/{plan.shard[1]}" if plan.shard else "",
        "entry": plan.entry,
        "data_fraction": plan.data_fraction,
        "train": plan.train.model_dump(mode="json") if plan.kind == "torch" else None,
        "status": result.status,
        "reason": result.reason,
        "n_parameters": result.n_parameters,
        "train_seconds": result.train_seconds,
        "steps": result.steps,
        "train_rows": result.train_rows,
        "flops_per_example": result.flops_per_example,
        # The usual estimate: a backward pass costs about twice the forward pass.
        "train_flops": 3.0 * result.flops_per_example * examples_seen,
        **result.cost,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "robust_accuracy": result.robust_accuracy,
        "robust_clean_accuracy": result.robust_clean_accuracy,
        "robust_note": result.robust_note,
        "layers": list(result.representations),
        "metrics": metrics,
    }


Job = MemberPlan | BackbonePlan


def run_job(store: RunStore, task: Task, study: Study, job: Job, device: str) -> dict[str, Any]:
    """Run one member or backbone in this process and write its folder; returns its record."""
    if isinstance(job, BackbonePlan):
        return train_and_store_backbone(store, task, study, job, device)
    return train_and_store(store, task, study, job, device)


def _cluster_line(client: Any, scheduler: str | None) -> str:
    workers = len(client.scheduler_info().get("workers", {}))
    where = f"scheduler {scheduler}" if scheduler else "a local cluster"
    link = dashboard_link(client)
    return f"Dask: {workers} worker(s) on {where}" + (f"; dashboard {link}" if link else "")


def _run_jobs(
    store: RunStore,
    study: Study,
    jobs: list[MemberPlan] | list[BackbonePlan],
    device: str,
    n_workers: int,
    task: Task,
    on_member: ProgressCallback | None,
    client: Any = None,
) -> None:
    """Run members (or backbones) on Dask, here, or in worker processes; report members."""
    if client is not None:

        def on_done(job: Job, record: dict[str, Any]) -> None:
            if on_member is not None and isinstance(job, MemberPlan):
                on_member(job, record, False)

        run_on_dask(client, store.root, study.model_dump(mode="json"), jobs, device, on_done)
        return
    if n_workers <= 1 or len(jobs) == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same numbers as one-thread workers
        try:
            for job in jobs:
                record = run_job(store, task, study, job, device)
                if on_member is not None and isinstance(job, MemberPlan):
                    on_member(job, record, False)
        finally:
            torch.set_num_threads(threads)
        return
    _run_parallel(store, study, jobs, device, min(n_workers, len(jobs)), on_member)


_WORKER_TASKS: dict[str, Task] = {}
"""Per worker process: the study's task by data spec (built once, reused by every job)."""


def _init_worker() -> None:
    torch.set_num_threads(1)


def worker_job(root: str, study_json: dict[str, Any], job: Job, device: str) -> dict[str, Any]:
    """Run one member or backbone in a worker process (process pool or Dask); its record."""
    import polyculture.data  # noqa: F401  (registers datasets in a fresh process)

    load_entry_point_plugins()
    load_plugins(study_json.get("plugins", []))  # the study's own datasets, families, metrics
    torch.set_num_threads(1)  # the same numbers as a serial run
    key = json.dumps(study_json["data"], sort_keys=True)
    if key not in _WORKER_TASKS:
        _WORKER_TASKS[key] = build_task(DataSpec.model_validate(study_json["data"]))
    study = Study.model_validate(study_json)
    return run_job(RunStore(Path(root)), _WORKER_TASKS[key], study, job, device)


def _run_parallel(
    store: RunStore,
    study: Study,
    jobs: list[MemberPlan] | list[BackbonePlan],
    device: str,
    n_workers: int,
    on_member: ProgressCallback | None,
) -> None:
    context = multiprocessing.get_context("spawn")  # fork after torch init is unsafe
    study_json = study.model_dump(mode="json")
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=context,
        initializer=_init_worker,
    ) as pool:
        futures: dict[Future[dict[str, Any]], Job] = {
            pool.submit(worker_job, str(store.root), study_json, job, device): job for job in jobs
        }
        try:
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = futures[future]
                    try:
                        record = future.result()
                    except BrokenProcessPool:
                        raise ExecutionError(
                            f"a worker process died while training {job.describe()} "
                            "(killed, or out of memory)",
                            hint="rerun the same command to resume; --workers 1 uses less memory",
                        ) from None
                    if on_member is not None and isinstance(job, MemberPlan):
                        on_member(job, record, False)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def assemble_tables(store: RunStore, task: Task, plans: list[MemberPlan]) -> None:
    """Build ``tables/`` from the member folders of ``plans`` (the study's members, in order)."""
    member_rows, prediction_frames, history_frames = [], [], []
    labels = {name: split for name, split in task.eval_splits()}
    for plan in plans:
        record = store.member_record(plan.member_id)
        row = {k: v for k, v in record.items() if k not in ("metrics", "params", "train", "layers")}
        row["params"] = json.dumps(record["params"], sort_keys=True)
        row["layers"] = ",".join(record["layers"])
        for split_name, values in record["metrics"].items():
            for metric, value in values.items():
                row[f"{split_name}_{metric}"] = value
        member_rows.append(row)
        for split_name, proba in store.probabilities(plan.member_id).items():
            split = labels[split_name]
            y = split.y.numpy()
            prediction_frames.append(
                prediction_frame(
                    plan.member_id,
                    split_name,
                    split.instance_ids().numpy(),
                    y,
                    proba.argmax(axis=1),
                    proba[np.arange(len(y)), y],
                )
            )
        history = store.history(plan.member_id)
        if len(history):
            history.insert(0, "member_id", plan.member_id)
            history_frames.append(history)
    tables = store.tables_dir
    write_table(pd.DataFrame(member_rows), tables / "members.parquet", csv=True)
    groups = None  # group attributes of the test instances (shared by the shifted sets)
    if task.test.groups is not None:
        groups = task.test.groups.assign(split="test", instance=task.test.instance_ids().numpy())
    write_optional_table(groups, tables / "groups.parquet")
    # Always written (possibly empty) so no table from an earlier run of the study survives.
    write_table(_concat(prediction_frames, PREDICTION_COLUMNS), tables / "predictions.parquet")
    write_table(_concat(history_frames, ["member_id"]), tables / "history.parquet")


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
