"""``ctrain demo --envs``: dev → staging → prod on one machine.

Each environment has its own MLflow server (MLflow's basic-auth app: nobody sees what was not
granted), its own users and its own data. A model trained in dev is pulled into staging by
staging's worker (dev knows it as a reader), compared there on staging's own held-out rows and
load-tested; then into prod, where a person must approve: the one who asked cannot, another
does. The servers are then asked who may do what. Last, prod's retraining is restricted to the
configuration that won in dev (promoted as configuration, not as a model) and trains it on
prod's own data.

This process plays each environment's worker in turn, as that environment's users (the
``MLFLOW_<ENV>_TRACKING_*`` variables, ``ctrain.credentials``), through the same steps as the
tasks of ``ct_training`` and ``ct_env_promotion``; the approval's answers are given here by
name, where Airflow's Required Actions would take them from the people signed in.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

from ctrain.credentials import variable
from ctrain.data.demo_source import DemoSource
from ctrain.records import RunContext
from ctrain.runtime import MlflowServers
from ctrain.settings import Settings, default_project_file, load_settings

ENVS = ("dev", "staging", "prod")
NEXT = {"dev": "staging", "staging": "prod"}
SEED = {"dev": 7, "staging": 8, "prod": 9}  # each environment's own data
REQUESTER, APPROVER = "alice", "bob"


def _projects(root: Path, base: Path, urls: dict[str, str]) -> dict[str, Path]:
    """A project file per environment (``root/<env>.yaml``): prod requires approval and trains
    only a promoted configuration."""
    data = yaml.safe_load(base.read_text(encoding="utf-8"))
    out = {}
    for env in ENVS:
        mine = dict(data, environment=env)
        mine["environments"] = {e: {"tracking_uri": urls[e], "home": str(root / e)} for e in ENVS}
        mine["demo"] = dict(data.get("demo") or {}, seed=SEED[env])
        promotion = dict(data.get("promotion") or {})
        # The packaged budgets, with two callers: a laptop that runs the demo runs other
        # things too, and four callers on two cores measure the machine more than the model.
        promotion["predeployment"] = dict(promotion.get("predeployment") or {}, users=2)
        mine["promotion"] = promotion
        if env == "prod":
            mine["promotion"] = dict(promotion, approval="required")
            mine["training"] = dict(data["training"], tuning="restricted")
        out[env] = root / f"{env}.yaml"
        out[env].write_text(yaml.safe_dump(mine), encoding="utf-8")
    return out


def _act_as(users: dict[str, tuple[str, str]]) -> None:
    """This process is now these environments' MLflow users, and no other environment's."""
    for env in ENVS:
        for what in ("USERNAME", "PASSWORD"):
            os.environ.pop(variable(env, what), None)
    for env, (user, password) in users.items():
        os.environ[variable(env, "USERNAME")] = user
        os.environ[variable(env, "PASSWORD")] = password


def _land_and_ingest(s: Settings, batches: range) -> int:
    from ctrain import steps

    src = DemoSource(**s.demo.model_dump())
    for i in batches:
        src.write_batch(i, s.landing_dir)
    done = [steps.ingest_one(p, s) for p in steps.list_landed(s)]
    return sum(o["rows_accepted"] for o in done)


def _figures(comparison: dict) -> str:
    from ctrain.storage import read_json

    f = read_json(Path(comparison["comparison_uri"])).get("predeployment")
    if not f:
        return "not load-tested"
    return (
        f"load test: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
        f"{f['rows_per_second']:.0f} rows/s, errors {f['error_rate']:.0%}, "
        f"peak {f['peak_memory_mb']:.0f} MB, files {f['artifact_mb']:.2f} MB"
    )


def _answer(user: str) -> dict:
    """An approval as Airflow's human-in-the-loop task returns it."""
    from ctrain.promotion.approval import APPROVE

    return {
        "chosen_options": [APPROVE],
        "params_input": {"comment": f"approved by {user} in the demo"},
        "responded_by_user": {"id": user, "name": user},
    }


def run_envs_demo(root: Path, base: Path | None = None) -> int:
    """Run the three-environment demo in the empty folder ``root``; prints what happened.
    The process's environment is as it was when it returns (the users it played are gone)."""
    saved = dict(os.environ)
    try:
        return _run(root, base)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run(root: Path, base: Path | None) -> int:
    import requests

    from ctrain import steps
    from ctrain.promotion.across import lineage_of, promote_config
    from ctrain.provision import provision
    from ctrain.status import environments, format_environments
    from ctrain.tracking import client_of, configure
    from ctrain.training.restricted import NoConfigPromoted

    print(f"ctrain demo --envs in {root}")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # the demo says what happened
    # Every password is made here and kept only in root/secrets.env (for the MLflow UIs).
    pw = {(env, user): secrets.token_urlsafe(16) for env in ENVS for user in (*ENVS, "admin")}
    with MlflowServers() as servers:
        urls = {env: servers.add(root / env / "mlflow-server", pw[env, "admin"]) for env in ENVS}
        print("1. An MLflow server per environment, basic auth on, nothing visible ungranted:")
        servers.wait_until_serving()
        projects = _projects(root, base or default_project_file(), urls)
        s = {env: load_settings(projects[env]) for env in ENVS}
        lines = [f"{env}: admin {pw[env, 'admin']}" for env in ENVS]
        lines += [f"{env}: {who}-worker {pw[env, who]}" for env in ENVS for who in ENVS]
        secret_file = root / "secrets.env"
        secret_file.touch(mode=0o600)
        secret_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

        from mlflow.server import get_app_client

        _act_as({env: ("admin", pw[env, "admin"]) for env in ENVS})
        for env in ENVS:
            configure(s[env])
            puller = NEXT.get(env)
            provision(
                s[env],
                client_of(s[env]),
                get_app_client("basic-auth", tracking_uri=urls[env]),
                f"{env}-worker",
                pw[env, env],
                puller=(f"{puller}-worker", pw[env, puller]) if puller else None,
            )
            reader = f"; {puller}-worker may read and record proposals" if puller else ""
            print(f"   {env:<8} {urls[env]}  {env}-worker edits{reader}")
        print(f"   (passwords in {secret_file})")

        def worker(env: str, source: str | None = None) -> Settings:
            users = {env: (f"{env}-worker", pw[env, env])}
            if source:
                users[source] = (f"{env}-worker", pw[source, env])
            _act_as(users)
            configure(s[env])
            return s[env]

        dev = worker("dev")
        rows = _land_and_ingest(dev, range(3))
        first = steps.run_training(RunContext(dag_id="demo", run_id="dev-first"), settings=dev)
        print(f"2. dev trains on its own {rows} rows: {first['headline']}")
        version = first["champion_after"]

        staging = worker("staging", source="dev")
        _land_and_ingest(staging, range(3))
        ctx = RunContext(dag_id="demo", run_id="to-staging", trigger_reason="demo").to_xcom()
        pulled = steps.pull("dev", version, ctx, staging)
        decision = steps.promote(pulled["comparison"], ctx, staging)
        steps.record_proposal("dev", version, decision, ctx, staging)
        carried = lineage_of(staging, client_of(staging), decision["challenger_version"])
        print(
            f"3. staging pulls dev v{version} as staging-worker: bytes carried and checked "
            f"(sha256 {carried['model_sha256'][:12]}), compared on staging's own rows"
        )
        print(f"   {_figures(pulled['comparison'])}")
        print(f"   {decision['headline']}")
        if decision["decision"] != "promoted":
            return _stopped("staging", decision)
        version = decision["champion_after"]

        prod = worker("prod", source="staging")
        _land_and_ingest(prod, range(3))
        ctx = RunContext(
            dag_id="demo",
            run_id="to-prod",
            trigger_reason="demo",
            started_by=REQUESTER,
            requested_by=REQUESTER,
        ).to_xcom()
        pulled = steps.pull("staging", version, ctx, prod)
        request = steps.approval_request(pulled["comparison"], ctx, prod)
        print(
            f"4. prod pulls staging v{version}, asked by {REQUESTER}: {_figures(pulled['comparison'])}"
        )
        if request is None:  # nothing would move: recorded as it stands, and the demo stops
            return _stopped("prod", steps.promote(pulled["comparison"], ctx, prod))
        print(f"   approval required: {request['subject']}")
        args = (pulled["comparison"], ctx, pulled["dataset"])
        refused = steps.promote_after_approval(*args, _answer(REQUESTER), prod)
        print(f"   {REQUESTER} approves her own request: {refused['headline']}")
        again = dict(ctx, run_id="to-prod-approved")
        decision = steps.promote_after_approval(
            pulled["comparison"], again, pulled["dataset"], _answer(APPROVER), prod
        )
        steps.record_proposal("staging", version, decision, again, prod)
        print(f"   {APPROVER} approves: {decision['headline']}")
        if decision["decision"] != "promoted":
            return _stopped("prod", decision)

        print("5. Who may move prod's champion, asked of the servers:")
        body = {"name": prod.model_name, "alias": "champion", "version": decision["champion_after"]}
        for env, user, password in (
            ("prod", "dev-worker", pw["dev", "dev"]),
            ("prod", "staging-worker", pw["staging", "staging"]),
            ("staging", "prod-worker", pw["staging", "prod"]),
        ):
            r = requests.post(
                f"{urls[env]}/api/2.0/mlflow/registered-models/alias",
                json=body | {"name": s[env].model_name},
                auth=(user, password),
                timeout=30,
            )
            print(f"   {user} moves {env}'s champion: HTTP {r.status_code} {r.reason}")

        ctx = RunContext(dag_id="demo", run_id="prod-retrain", trigger_reason="demo: new data")
        _land_and_ingest(prod, range(3, 4))
        try:
            steps.train(steps.assemble(ctx.to_xcom(), prod), ctx.to_xcom(), prod)
        except NoConfigPromoted as exc:
            print(f"6. prod retrains on a 4th batch of its own: refused: {exc}")
        conf = promote_config(prod, "staging", version, ctx, client_of(prod))
        print(f"   ctrain env promote-config --from staging --version {version}: {conf.reason}")
        comparison = steps.run_training(ctx, prod, decide=False)
        head = f"v{comparison['challenger_version']}, the promoted configuration on prod's data"
        if request := steps.approval_request(comparison, ctx.to_xcom(), prod):
            print(f"   prod retrains: {head}, waits for an approver: {request['subject']}")
        else:
            print(
                f"   prod retrains: {head}, not promoted ({comparison['rule']}): {comparison['reason']}"
            )

        print("7. ctrain env status (as prod's worker):")
        print("   " + format_environments(environments(prod)).replace("\n", "\n   "))
    print(f"\nProject files: {', '.join(str(p) for p in projects.values())}")
    return 0


def _stopped(env: str, decision: dict) -> int:
    print(f"\nThe demo stops: {env} did not promote ({decision['rule']}): {decision['reason']}")
    return 1
