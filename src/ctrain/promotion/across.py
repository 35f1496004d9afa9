"""Promotion across environments (dev → staging → prod), pulled by the target.

The target's worker reads a version from the source environment's MLflow and carries its
**bytes** into its own store (not MLflow's ``copy_model_version``, whose copy keeps pointing at
the source's storage): downloaded, checked with the safe loader's checks (skops, trusted types
only: nothing is unpickled), its signature checked against the target's schema, hashed file by
file (a sha256 manifest), written as a logged model of the target, downloaded again and hashed
again, and only then registered. A version therefore exists in the target only once its bytes
are verified; a carry killed half way leaves an unfinalized logged model and no version, and
its retry (same source version, same bytes: the same key) finishes it.

Then the target judges it as it judges its own candidates: the paired comparison with its
``champion`` on its own held-out rows (the window ``ct_training`` would assemble now), and the
compare-and-set move (``promote``), recorded there. The source records that it proposed the
version (``proposed``), naming where it went and what the target decided.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ctrain.promotion.compare import compare
from ctrain.promotion.decisions import record_once
from ctrain.promotion.predeploy import gate
from ctrain.promotion.promote import promote, refusal
from ctrain.records import (
    Comparison,
    DatasetWindow,
    Decision,
    DecisionKind,
    RegisteredVersion,
    RunContext,
)
from ctrain.registry import (
    DOWNLOAD_NOTE,
    REGISTERED_VERSION,
    check_folder,
    current_champion,
    download_model,
    ensure_registered_model,
    manifest,
    registered_version_of,
    version_uri,
)
from ctrain.registry import manifest_digest as digest
from ctrain.settings import Settings
from ctrain.tracking import client_of, ensure_experiment
from ctrain.training.restricted import CANDIDATE_TAG

CARRIED = "carried"  # ctrain_stage of a target's run that holds a version carried in
LINEAGE = ("source_environment", "source_version", "source_run_id", "model_sha256")
# What the source's training run says of how it was trained, kept on the carried run: the
# configuration can then be promoted on from the target (staging → prod) as from the source.
TRAINED_WITH = (CANDIDATE_TAG, "training_config_hash")


class CarryRefused(Exception):
    """The version was not carried; the message says why. Nothing is visible in the target."""


def _signature_refusal(folder: Path, target: Settings) -> str | None:
    """Why the model's input signature does not fit the target's features, or None."""
    from mlflow.models import Model

    signature = Model.load(str(folder)).signature
    if signature is None:
        return "it has no input signature to check against the target's schema"
    names = set(signature.inputs.input_names())
    wanted = set(target.dataset.feature_names)
    if names != wanted:
        missing, extra = sorted(wanted - names), sorted(names - wanted)
        return (
            f"its signature does not fit {target.environment}'s features: "
            f"missing {missing or 'none'}, not in the schema {extra or 'none'}"
        )
    return None


def _servable_in_source(target: Settings, source_name: str, version: str):
    """The source's settings, client, model version and a name for it (``dev ctrain-demo v3``),
    once the version is found there and may serve there.

    Raises:
        ValueError: this project names no environment, or ``source_name`` is this one or not
            one of its environments.
        CarryRefused: no such version, or it may not serve in the source (``refusal``).
    """
    from mlflow.exceptions import MlflowException

    if not target.environment:
        raise ValueError("this project names no environment: set environment (CTRAIN_ENVIRONMENT)")
    if source_name == target.environment:
        raise ValueError(f"{source_name} is this environment: pull from another one")
    source = target.of(source_name)
    src = client_of(source)
    where = f"{source_name} {source.model_name} v{version}"
    try:
        mv = src.get_model_version(source.model_name, version)
    except MlflowException as exc:
        raise CarryRefused(f"{where}: not found ({exc.error_code})") from None
    if why := refusal(source, src, version):
        raise CarryRefused(f"{where}: may not serve in {source_name}: {why}")
    return source, src, mv, where


def carry(
    target: Settings, source_name: str, version: str, ctx: RunContext, client
) -> RegisteredVersion:
    """Carry ``version`` of ``source_name`` into ``target``'s store and register it there, once.

    Raises:
        CarryRefused: the source has no such version, it may not serve there, it does not load
            safely, its signature does not fit, or the bytes written are not the bytes read.
    """

    source, src, mv, where = _servable_in_source(target, source_name, version)
    with tempfile.TemporaryDirectory(prefix="ctrain-carry-") as tmp:
        folder = download_model(
            version_uri(source.model_name, version),
            source.resolved_tracking_uri,
            Path(tmp) / "read",
        )
        try:
            check_folder(folder, where)
        except Exception as exc:
            raise CarryRefused(f"{where}: does not load safely: {exc}") from None
        if why := _signature_refusal(folder, target):
            raise CarryRefused(f"{where}: {why}")
        (folder / DOWNLOAD_NOTE).unlink(missing_ok=True)  # MLflow's note, not the model's bytes
        files = manifest(folder)
        sha = digest(files)
        lineage = {
            "source_environment": source_name,
            "source_version": str(version),
            "source_run_id": mv.run_id or "",
            "model_sha256": sha,
        }
        run_tags = src.get_run(mv.run_id).data.tags if mv.run_id else {}
        trained_with = {k: run_tags[k] for k in TRAINED_WITH if k in run_tags}
        return _write_verified(
            target, client, folder, files, lineage, dict(mv.tags) | trained_with, ctx, tmp
        )


def _write_verified(
    target: Settings,
    client,
    folder: Path,
    files: dict[str, str],
    lineage: dict[str, str],
    source_tags: dict[str, str],
    ctx: RunContext,
    tmp: str,
) -> RegisteredVersion:
    """Write the bytes as a logged model of the target, read them back, compare, register.
    ``source_tags``: the source version's tags and its run's ``TRAINED_WITH``."""
    name, sha = target.model_name, lineage["model_sha256"]
    key = f"{lineage['source_environment']}/{lineage['source_version']}/{sha}"
    exp = ensure_experiment(client, target.experiment, target)
    found = client.search_runs([exp], filter_string=f"tags.ctrain_carry_key = '{key}'")
    run = found[0] if found else None
    # A retry after the version was made (its run tagged, or killed just before that): the
    # version made from this run, never a second one.
    done = registered_version_of(client, name, run) if run is not None else None
    if done is not None:
        client.set_tag(run.info.run_id, REGISTERED_VERSION, done)
        return RegisteredVersion(model_name=name, version=done, model_uri=version_uri(name, done))
    if run is None:
        run = client.create_run(
            exp,
            run_name=f"carried from {lineage['source_environment']} v{lineage['source_version']}",
            tags={"ctrain_carry_key": key, "ctrain_stage": "carrying", **lineage}
            | {k: source_tags[k] for k in TRAINED_WITH if k in source_tags},
        )
    run_id = run.info.run_id
    logged = client.create_logged_model(exp, name="model", source_run_id=run_id, tags=lineage)
    client.log_model_artifacts(logged.model_id, str(folder))
    back = download_model(
        f"models:/{logged.model_id}", target.resolved_tracking_uri, Path(tmp) / "written"
    )
    written = manifest(back)
    if written != files:
        client.finalize_logged_model(logged.model_id, "FAILED")
        changed = sorted(k for k in files.keys() | written.keys() if files.get(k) != written.get(k))
        raise CarryRefused(
            f"the bytes written to {target.environment} are not the bytes read: {changed[:5]}"
        )
    client.finalize_logged_model(logged.model_id, "READY")
    uri = f"models:/{logged.model_id}"
    client.log_text(run_id, json.dumps(files, indent=2, sort_keys=True), "manifest.json")
    client.set_tag(run_id, "model_uri", uri)
    client.set_tag(run_id, "ctrain_stage", CARRIED)
    client.set_terminated(run_id, "FINISHED")
    ensure_registered_model(client, name)
    keep = ("validation_status", "data_window", "training_config_hash", "code_version", "estimator")
    tags = {k: source_tags[k] for k in keep if k in source_tags} | lineage
    tags |= {"airflow_dag_id": ctx.dag_id, "airflow_run_id": ctx.run_id, "mlflow_run_id": run_id}
    version = str(
        client.create_model_version(
            name, source=uri, run_id=run_id, tags=tags, model_id=logged.model_id
        ).version
    )
    client.set_tag(run_id, REGISTERED_VERSION, version)
    return RegisteredVersion(model_name=name, version=version, model_uri=version_uri(name, version))


def pull(
    target: Settings, source_name: str, version: str, ctx: RunContext, client
) -> tuple[Comparison, DatasetWindow]:
    """Carry ``version`` of ``source_name`` into ``target`` and judge it there: the paired
    comparison with the target's champion on the target's held-out rows, then the
    pre-deployment gate. Nothing moves yet; returns the comparison and the window."""
    from ctrain.training.assemble import assemble_window

    carried = carry(target, source_name, version, ctx, client)
    dataset = assemble_window(target)
    return gate(target, compare(target, carried, dataset, ctx, client), dataset), dataset


def lineage_of(target: Settings, client, version: str) -> dict[str, str | None]:
    """Where a carried version of ``target`` came from, for its decision record."""
    mv = client.get_model_version(target.model_name, version)
    return {k: mv.tags.get(k) for k in LINEAGE}


def promote_across(
    target: Settings, source_name: str, version: str, ctx: RunContext, client
) -> Decision:
    """Pull ``version`` of ``source_name`` (``pull``), move or reject (recorded in the target),
    and record in the source that it was proposed. Where a person must approve a move
    (``promotion.approval: required``), only ``ct_env_promotion`` pulls: it waits for them.

    Raises:
        ApprovalRequired: approval is required in the target.
    """
    if target.promotion.approval == "required" and not ctx.dry_run:
        raise ApprovalRequired(
            f"{target.environment} requires a person's approval before its champion moves: "
            "trigger ct_env_promotion in its Airflow, where an approver answers"
        )
    comparison, _ = pull(target, source_name, version, ctx, client)
    extra = lineage_of(target, client, comparison.challenger_version)
    decision = promote(target, comparison, ctx, client, extra=extra)
    record_proposal(target, source_name, version, decision, ctx)
    return decision


class ApprovalRequired(Exception):
    """The target moves its champion only after a person's approval (``ct_env_promotion``)."""


def record_proposal(
    target: Settings, source_name: str, version: str, decision: Decision, ctx: RunContext
) -> Decision:
    """The source's record that ``version`` was proposed to ``target`` and what was decided
    there (once per target run and version)."""
    return _record_in_source(
        target,
        source_name,
        version,
        ctx,
        what="proposed",
        reason=f"proposed to {target.environment}, where it is v{decision.challenger_version}: "
        f"{decision.headline}",
    )


def _record_in_source(
    target: Settings, source_name: str, version: str, ctx: RunContext, *, what: str, reason: str
) -> Decision:
    """A ``proposed`` record in the source about its ``version`` (once per target run)."""
    source = target.of(source_name)
    src = client_of(source)
    return record_once(
        src,
        source,
        f"{what}/{target.environment}/{ctx.dag_id}/{ctx.run_id}/v{version}",
        ctx,
        current_champion(src, source.model_name),
        {
            "decision": DecisionKind.PROPOSED,
            "rule": what,
            "reason": reason,
            "challenger_version": str(version),
        },
    )


def promote_config(
    target: Settings, source_name: str, version: str, ctx: RunContext, client
) -> Decision:
    """Make the configuration ``version`` of ``source_name`` won with the only one ``target``'s
    restricted training uses ("promote code, not models": the target trains on its own data).

    The version must be one that may serve in the source (validated, trained by ctrain); its
    configuration is checked as the project file's candidates are. Recorded in both
    environments: ``configured`` in the target, ``proposed`` in the source.

    Raises:
        CarryRefused: no such version, it may not serve there, or it holds no configuration
            ctrain trains. Nothing changed in the target.
    """

    from ctrain.training.restricted import (
        CANDIDATE_TAG,
        CONFIG_FROM_TAG,
        CONFIG_TAG,
        promoted_config,
        spec_from_json,
    )

    _source, src, mv, where = _servable_in_source(target, source_name, version)
    tags = src.get_run(mv.run_id).data.tags
    if CANDIDATE_TAG not in tags:
        raise CarryRefused(
            f"{where}: its training run does not say what configuration won it (trained "
            "before ctrain recorded one): train it again in the source, then promote that"
        )
    try:
        spec = spec_from_json(tags[CANDIDATE_TAG], f"{where}, tag {CANDIDATE_TAG}")
    except ValueError as exc:
        raise CarryRefused(str(exc)) from None
    name = target.model_name
    ensure_registered_model(client, name)
    before = promoted_config(client, name)
    provenance = f"{source_name} v{version} (run {mv.run_id})"
    client.set_registered_model_tag(name, CONFIG_TAG, spec.model_dump_json())
    client.set_registered_model_tag(name, CONFIG_FROM_TAG, provenance)
    params = ", ".join(f"{k}={v}" for k, v in sorted(spec.params.items())) or "defaults"
    was = f"{before[0].name} from {before[1]}" if before else "none"
    decision = record_once(
        client,
        target,
        f"configured/{ctx.dag_id}/{ctx.run_id}/{source_name}/v{version}",
        ctx,
        current_champion(client, name),
        {
            "decision": DecisionKind.CONFIGURED,
            "rule": "config_promoted",
            "reason": f"{target.environment} trains {spec.name} ({spec.estimator}; {params}) "
            f"from {provenance}; was: {was}",
            "challenger_version": None,
            "training_config": spec.model_dump(mode="json"),
            "source_environment": source_name,
            "source_version": str(version),
            "source_run_id": mv.run_id,
            "source_training_config_hash": tags.get("training_config_hash"),
        },
    )
    _record_in_source(
        target,
        source_name,
        version,
        ctx,
        what="config_proposed",
        reason=f"its training configuration ({spec.name}) now the one {target.environment} trains",
    )
    return decision
