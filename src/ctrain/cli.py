"""The ``ctrain`` command: init, demo, status, promote, rollback, up, and the steps by hand."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ctrain.records import DecisionKind, RunContext
from ctrain.settings import Settings, load_settings

DEMO_MARKER = ".ctrain-demo"


def _client(settings: Settings):
    from ctrain.tracking import configure

    return configure(settings)


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "cli"


def cmd_init(settings: Settings, args) -> int:
    from ctrain.runtime import migrate
    from ctrain.tracking import ensure_experiment

    for d in (
        settings.landing_dir,
        settings.accepted_dir,
        settings.quarantine_dir,
        settings.airflow_home,
    ):
        d.mkdir(parents=True, exist_ok=True)
    client = _client(settings)
    for name in (
        settings.experiment,
        settings.decisions_experiment,
        settings.monitoring_experiment,
    ):
        ensure_experiment(client, name, settings)
    migrate(settings, settings.root / "logs" / "init.log")
    print(f"ctrain home:   {settings.root}")
    print(f"landing:       {settings.landing_dir}   (drop CSV or Parquet batches here)")
    print(f"MLflow store:  {settings.resolved_tracking_uri}")
    print(f"Airflow home:  {settings.airflow_home}   (DAGs: {settings.resolved_dags_folder})")
    return 0


def cmd_metrics(settings: Settings, args) -> int:
    from ctrain.telemetry import exposition

    sys.stdout.write(exposition(settings, _client(settings)).decode())
    return 0


def cmd_status(settings: Settings, args) -> int:
    from ctrain.promotion.promote import settle
    from ctrain.status import format_status, status

    client = _client(settings)
    # What a killed promote left open is closed first, so the history printed is true; a move
    # under way (the lock held) is shown as unfinished instead.
    for rec in settle(settings, client) or []:
        print(f"reconciled: {rec.headline}", file=sys.stderr)
    report = status(settings, client, limit=args.limit)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_status(report, settings.promotion.metric))
    return 0


def cmd_promote(settings: Settings, args) -> int:
    from ctrain.promotion.promote import manual_promote

    ctx = RunContext(
        dag_id="cli",
        trigger_reason=args.reason or f"ctrain promote by {_user()}",
        started_by=f"{_user()} (ctrain CLI)",
    )
    rec = manual_promote(settings, str(args.version), ctx, _client(settings))
    print(f"{rec.headline} ({rec.reason}); record {rec.record_run_id}")
    return 0 if rec.moved else 1


def cmd_rollback(settings: Settings, args) -> int:
    from ctrain.promotion.promote import rollback

    ctx = RunContext(
        dag_id="cli",
        trigger_reason=args.reason or f"ctrain rollback by {_user()}",
        started_by=f"{_user()} (ctrain CLI)",
    )
    rec = rollback(settings, ctx, _client(settings), to_version=args.to)
    print(f"{rec.headline}; record {rec.record_run_id}")
    return 0 if rec.moved else 1


def cmd_env(settings: Settings, args) -> int:
    """``ctrain env status``; ``ctrain env promote --from dev --version N`` (the version's bytes)
    and ``ctrain env promote-config --from dev --version N`` (its training configuration),
    pulled into this environment."""
    from ctrain.promotion.across import promote_across, promote_config
    from ctrain.status import environments, format_environments

    if args.action == "status":
        entries = environments(settings)
        if not entries:
            raise ValueError("this project names no environments (settings: environments)")
        print(json.dumps(entries, indent=2) if args.json else format_environments(entries))
        return 0
    if not args.source or not args.version:
        raise ValueError(f"env {args.action} needs --from ENV and --version N")
    ctx = RunContext(
        dag_id="cli",
        run_id=f"env-{args.action}-{args.source}-v{args.version}",
        trigger_reason=args.reason or f"ctrain env {args.action} --from {args.source} by {_user()}",
        started_by=f"{_user()} (ctrain CLI)",
    )
    pull = promote_across if args.action == "promote" else promote_config
    rec = pull(settings, args.source, str(args.version), ctx, _client(settings))
    print(f"{settings.environment}: {rec.headline} ({rec.reason}); record {rec.record_run_id}")
    return 0 if rec.moved or rec.decision == DecisionKind.CONFIGURED else 1


def cmd_rollout(settings: Settings, args) -> int:
    """The rollout's split and its live evidence; or one of its verbs, without Airflow."""
    from datetime import datetime

    from ctrain.rollout import control as rollout
    from ctrain.rollout.evidence import guardrails, measure
    from ctrain.serving.traffic import read_split

    client = _client(settings)
    ctx = RunContext(
        dag_id="cli",
        run_id=args.run_id or "",
        trigger_reason=args.reason or f"ctrain rollout {args.action} by {_user()}",
        started_by=f"{_user()} (ctrain CLI)",
    )
    split = read_split(client, settings.model_name)
    if args.action == "status":
        report = {"split": split.describe(), **{"state": split.__dict__}}
        if split.active:
            ev = measure(settings, split, datetime.fromisoformat(split.since))
            report["step_evidence"] = ev.to_dict()
            report["checks"] = [c.__dict__ for c in guardrails(settings, split, ev)]
        print(json.dumps(report, indent=2, default=str))
        return 0
    if args.action == "start":
        split = rollout.start(settings, client, args.version, ctx, args.strategy)
        print(f"{split.describe()} (run id {ctx.run_id}: pass it to advance and finish)")
        return 0
    if args.action == "abort":
        print(rollout.abort(settings, client, ctx.trigger_reason, ctx).describe())
        return 0
    if args.action == "advance":
        progress = rollout.advance(settings, client, split.rollout_id, ctx)
        print(f"{progress.state}: {progress.detail}")
        return 0
    decision = rollout.finish(settings, client, split.rollout_id, ctx, passed=args.passed)
    print(f"{decision.headline} ({decision.reason}); record {decision.record_run_id}")
    return 0 if decision.moved else 1


def cmd_mlflow_init(settings: Settings, args) -> int:
    """The production MLflow's experiments, model and worker user (run as MLflow's admin)."""
    from mlflow.server import get_app_client

    from ctrain.provision import provision

    password = os.environ.get("MLFLOW_WORKER_PASSWORD")
    if not password:
        print(
            "ctrain mlflow-init: set MLFLOW_WORKER_PASSWORD to the worker's password",
            file=sys.stderr,
        )
        return 2
    if settings.tracking_uri is None:
        print("ctrain mlflow-init: set CTRAIN_TRACKING_URI to the MLflow server", file=sys.stderr)
        return 2
    users = {}
    for role, user, env in (
        ("viewer", args.viewer_user, "MLFLOW_VIEWER_PASSWORD"),
        ("serving user", args.serving_user, "MLFLOW_SERVING_PASSWORD"),
        ("puller", args.puller_user, "MLFLOW_PULLER_PASSWORD"),
    ):
        secret = os.environ.get(env)
        if user and not secret:
            print(f"ctrain mlflow-init: set {env} to the {role}'s password", file=sys.stderr)
            return 2
        users[role] = (user, secret) if user else None
    auth = get_app_client("basic-auth", tracking_uri=settings.tracking_uri)
    for line in provision(
        settings,
        _client(settings),
        auth,
        args.worker_user,
        password,
        users["viewer"],
        users["serving user"],
        users["puller"],
    ):
        print(line)
    return 0


def cmd_ingest(settings: Settings, args) -> int:
    """What ct_ingest does: the waiting label files first, then the waiting batches; a line each."""
    from ctrain import steps

    def line(kind: str, o: dict) -> str:
        return (
            f"{kind:<6} {o['batch_id'] or o['source_file']:<20} {o['status']:<12} in={o['rows_in']} "
            f"accepted={o['rows_accepted']} quarantined={o['rows_quarantined']} {o['reason']}"
        )

    for o in steps.ingest_labels(settings):
        print(line("labels", o))
    for path in steps.list_landed(settings):
        print(line("batch", steps.ingest_one(path, settings)))
    return 0


def cmd_train(settings: Settings, args) -> int:
    from ctrain import steps

    ctx = RunContext(
        dag_id="cli",
        trigger_reason=args.reason,
        dry_run=args.dry_run,
        force=args.force,
        window_batches=args.window_batches,
    )
    print(json.dumps(steps.run_training(ctx, settings), indent=2, default=str))
    return 0


def cmd_serve(settings: Settings, args) -> int:
    from ctrain.serving.app import run

    return run(settings, _client(settings), host=args.host, port=args.port, version=args.version)


def cmd_generate(settings: Settings, args) -> int:
    from ctrain.data.demo_source import DemoSource

    src = DemoSource(**settings.demo.model_dump())
    for i in range(args.start, args.start + args.count):
        print(src.write_batch(i, settings.landing_dir, args.format))
    return 0


def cmd_up(settings: Settings, args) -> int:
    """Airflow (standalone) and the MLflow UI on the embedded stores, until Ctrl-C."""
    from ctrain.runtime import Services, airflow_bin, airflow_env, api_server_env

    env = (
        airflow_env(settings)
        | api_server_env(args.airflow_port)
        | {"CTRAIN_MLFLOW_UI_URL": f"http://127.0.0.1:{args.mlflow_port}"}
    )
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    mlflow = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--backend-store-uri",
        settings.resolved_tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.mlflow_port),
    ]

    def stop(*_):
        raise KeyboardInterrupt

    # A terminal closed or a service manager stopping us ends the children like Ctrl-C does.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        with Services(env) as services:
            services.start([airflow_bin(), "standalone"])
            services.start(mlflow)
            pw = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
            print(
                f"Airflow UI: http://127.0.0.1:{args.airflow_port}  (user admin, password in {pw})"
            )
            print(f"MLflow UI:  http://127.0.0.1:{args.mlflow_port}")
            print("Ctrl-C stops both.", flush=True)
            while services.alive():
                time.sleep(1)
    except KeyboardInterrupt:
        pass  # the services were stopped on the way out
    return 0


def cmd_demo(settings: Settings, args) -> int:
    from ctrain.demo import run_demo

    root = settings.root
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_MARKER).exists():
            print(
                f"refusing to run the demo in {root}: it holds data that the demo did not create. "
                "Set CTRAIN_HOME to an empty folder.",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text(datetime.now(UTC).isoformat() + "\n")
    # SIGTERM unwinds like Ctrl-C, so the Airflow services the demo started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.envs:
        from ctrain.demo_envs import run_envs_demo

        return run_envs_demo(root, Path(args.project) if args.project else None)
    # The demo's labels arrive late, as separate files; every Airflow process inherits this.
    os.environ["CTRAIN_DATASET__LABELS"] = "delayed"
    if args.serve:
        from ctrain.demo import serve_demo_env

        for key, value in serve_demo_env().items():
            os.environ.setdefault(key, value)
    return run_demo(
        load_settings(args.project), approval=args.approval, serve=args.serve, notify=args.notify
    )


def cmd_new_project(_settings: Settings | None, args) -> int:
    from ctrain.scaffold import describe, read_sample, write_project

    sample = Path(args.sample)
    project = describe(
        read_sample(sample),
        target=args.target,
        id_column=args.id_column,
        event_time_column=args.time_column,
        model_name=args.model_name,
        landing_dir=Path(args.landing_dir).resolve() if args.landing_dir else None,
    )
    out = write_project(project, Path(args.out), sample, force=args.force)
    features = project["dataset"]["features"]
    print(f"wrote {out}: {len(features)} features ({', '.join(f['name'] for f in features)})")
    print(f"review it, then: CTRAIN_PROJECT={out} ctrain init && CTRAIN_PROJECT={out} ctrain up")
    return 0


# Commands that make a project rather than read one.
_NO_SETTINGS = {"new-project"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctrain", description=__doc__)
    p.add_argument("--project", help="project YAML (default: $CTRAIN_PROJECT or the packaged demo)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "init", help="create CTRAIN_HOME, the MLflow store and Airflow's database"
    ).set_defaults(fn=cmd_init)
    s = sub.add_parser("demo", help="run the whole loop through Airflow on generated data")
    s.add_argument(
        "--envs",
        action="store_true",
        help="instead: dev → staging → prod, each with its own MLflow server (basic auth), "
        "users and data; a model promoted twice (load-tested, then approved by another person) "
        "and prod's retraining restricted to the promoted configuration",
    )
    s.add_argument(
        "--approval",
        action="store_true",
        help="the stream's promotions wait for approval (Airflow's Required Actions); the "
        "demo approves through the REST API",
    )
    s.add_argument(
        "--serve",
        action="store_true",
        help="then `ctrain serve` answers live traffic while a retrain's challenger is canaried "
        "by ct_rollout, and the demo counts failed requests",
    )
    s.add_argument(
        "--notify",
        action="store_true",
        help="route every kind of notification to an inbox on 127.0.0.1 (through an Airflow "
        "connection of type apprise) and print what the operators were told",
    )
    s.set_defaults(fn=cmd_demo)
    s = sub.add_parser("status", help="champion, challenger and recent decisions")
    s.add_argument("--limit", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    sub.add_parser(
        "metrics", help="the loop's figures in Prometheus' text format, read from the records"
    ).set_defaults(fn=cmd_metrics)
    s = sub.add_parser("promote", help="make a version champion by hand (recorded)")
    s.add_argument("--version", required=True)
    s.add_argument("--reason")
    s.set_defaults(fn=cmd_promote)
    s = sub.add_parser(
        "rollback", help="move champion back to the previous (or a given) version (recorded)"
    )
    s.add_argument("--to")
    s.add_argument("--reason")
    s.set_defaults(fn=cmd_rollback)
    s = sub.add_parser(
        "env",
        help="environments: each one's champion (status); pull a version (promote) or the "
        "configuration it won with (promote-config) of another one into this one (recorded)",
    )
    s.add_argument("action", choices=["status", "promote", "promote-config"])
    s.add_argument("--from", dest="source", help="dev, staging or prod")
    s.add_argument("--version")
    s.add_argument("--reason")
    s.add_argument("--json", action="store_true", help="status: as JSON")
    s.set_defaults(fn=cmd_env)
    s = sub.add_parser(
        "rollout",
        help="the traffic split of a rollout and its live evidence; start, advance, finish or "
        "abort one without Airflow (ct_rollout does the same)",
    )
    s.add_argument("action", choices=["status", "start", "advance", "finish", "abort"])
    s.add_argument("--version", help="start: the version (default @challenger)")
    s.add_argument("--strategy", choices=["shadow", "canary", "ab"])
    s.add_argument("--run-id", help="the id start printed (names the records of one rollout)")
    s.add_argument("--passed", action="store_true", help="finish: the last advance passed")
    s.add_argument("--reason")
    s.set_defaults(fn=cmd_rollout)
    s = sub.add_parser("up", help="start the Airflow UI and the MLflow UI on the embedded stores")
    s.add_argument("--airflow-port", type=int, default=8080)
    s.add_argument("--mlflow-port", type=int, default=5000)
    s.set_defaults(fn=cmd_up)
    s = sub.add_parser(
        "mlflow-init",
        help="production: create the experiments, the model and the worker user, as MLflow's admin",
    )
    s.add_argument("--worker-user", default="ctrain-worker")
    s.add_argument(
        "--viewer-user",
        help="also a read-only user (password from MLFLOW_VIEWER_PASSWORD) for Airflow's API "
        "server, which reads ctrain's records for the ctrain view",
    )
    s.add_argument(
        "--serving-user",
        help="also a user for ctrain serve (password from MLFLOW_SERVING_PASSWORD): READ on the "
        "model and the training experiment only",
    )
    s.add_argument(
        "--puller-user",
        help="also the next environment's worker, which pulls versions from this one (password "
        "from MLFLOW_PULLER_PASSWORD): READ on the model and the training experiment, EDIT on the "
        "decisions experiment (where it records a proposal); it can move nothing here",
    )
    s.set_defaults(fn=cmd_mlflow_init)
    sub.add_parser("ingest", help="validate the landing folder now, without Airflow").set_defaults(
        fn=cmd_ingest
    )
    s = sub.add_parser("train", help="run the training pipeline now, without Airflow")
    s.add_argument("--window-batches", type=int, help="train on the most recent N accepted batches")
    s.add_argument("--reason", default="manual (ctrain train)")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser(
        "new-project", help="write a project YAML for your data from a sample batch (CSV, Parquet)"
    )
    s.add_argument("sample", help="a batch of your data, with the target filled in")
    s.add_argument("--target", required=True)
    s.add_argument("--id-column", required=True, help="a unique id per row (labels join on it)")
    s.add_argument("--time-column", required=True, help="when each row's event happened")
    s.add_argument("--model-name", required=True, help="the registered model's name in MLflow")
    s.add_argument("--landing-dir", help="where your batches will land (default: CTRAIN_HOME)")
    s.add_argument("-o", "--out", required=True, help="the project file to write")
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(fn=cmd_new_project)
    s = sub.add_parser("serve", help="score rows online with @champion over HTTP (hot reload)")
    s.add_argument("--host", default=None, help="address to bind (default serving.host)")
    s.add_argument("--port", type=int, default=None, help="port (default serving.port)")
    s.add_argument(
        "--version",
        help="a scratch service of this version alone (what the pre-deployment load test "
        "calls): aliases not followed, nothing written to the inference log",
    )
    s.set_defaults(fn=cmd_serve)
    s = sub.add_parser("generate", help="write demo batches into the landing folder")
    s.add_argument("--start", type=int, default=0)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    s.set_defaults(fn=cmd_generate)
    return p


def _url_of(exc: Exception) -> str:
    """The endpoint an MLflow error names, or its first words."""
    import re

    found = re.search(r"endpoint (\S+)", str(exc))
    return found.group(1) if found else " ".join(str(exc).split())[:200]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = None if args.cmd in _NO_SETTINGS else load_settings(args.project)
        return args.fn(settings, args)
    except (
        Exception
    ) as exc:  # the CLI says what went wrong in one line; tracebacks with CTRAIN_DEBUG=1
        if os.environ.get("CTRAIN_DEBUG"):
            raise
        from ctrain.credentials import refused

        if why := refused(exc):
            print(f"ctrain {args.cmd}: the MLflow server {why}: {_url_of(exc)}", file=sys.stderr)
            return 1
        # Libraries' messages may span lines (a YAML mark, a pyarrow schema): one line here.
        print(
            f"ctrain {args.cmd}: {type(exc).__name__}: {' '.join(str(exc).split())}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
