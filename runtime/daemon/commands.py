"""The daemon's subcommands of `dynworkers`: serve, init, and the control API's wrappers.

Host side, in the CLI's main thread. `serve` runs the daemon until SIGTERM; `init NAME` writes a
tenant directory to start from (runtime.daemon.scaffold); the others talk to a running daemon's
control API through the public client (runtime.daemon.client: --url, else DYNWORKERS_URL, else
the live daemon's `<state_dir>/daemon.json`, else the config's control address; the token from
--token or the config) and print tables where a person reads them, JSON with --json. Under
--json a failure is JSON too, on stdout: {"error", "message", "kind", "status", ...}.

Exit status, by kind (the same for every subcommand):

    0  done
    1  refused: the daemon refused the operation (an instance's status forbids it, a dispatcher
       owns the code) or failed on it
    2  invalid: bad arguments, config, JSON or code (400, 413, 422); or `serve` could not start
       (the state directory is in use, read-only or full; the address is taken): one line on
       stderr saying what to do
    3  not found: no such tenant or instance (404)
    4  unavailable: no daemon answers at the address, or it is draining or its store refuses
       writes (503)
    5  unauthorized: the daemon refused the control token (401)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynworkers.engine import EngineError, StoreError
from dynworkers.runtime.daemon.client import (
    URL_VARIABLE,
    ControlClient,
    ControlError,
    ControlInvalid,
)
from dynworkers.runtime.daemon.config import (
    ENV_PREFIX,
    FIELDS,
    ConfigError,
    DaemonConfig,
    load_config,
)
from dynworkers.runtime.daemon.deployments import read_directory
from dynworkers.runtime.errors import DynworkersError

#: serve's flags: the setting each one sets, and what it is
SERVE_FLAGS = {
    "tenants": "the code directory: <dir>/<tenant>/*.py",
    "host": "address of the tenant front door",
    "port": "port of the tenant front door (0 picks a free one)",
    "state_dir": "KV, compile cache, deployed code, the SQLite store",
    "control_host": "address of the control API",
    "control_port": "port of the control API (0 picks a free one)",
    "store": "sqlite:///path.db or postgresql://user@host/database",
}


def setting_help(name: str, what: str) -> str:
    """Help text naming the setting and its environment variable, with the default."""
    default = "sqlite:///<state_dir>/engine.db" if name == "store" else FIELDS[name].default
    shown = f"default {default}" if default not in ("", None) else "no default"
    return f"{what} (setting {name}, {ENV_PREFIX}{name.upper()}; {shown})"


def add_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the daemon (HTTP front door + control API)",
        description="Flags override DYNWORKERS_* variables, which override the config file.",
    )
    serve.add_argument(
        "--config",
        help="TOML config file (DYNWORKERS_CONFIG; default ./dynworkers.toml if present)",
    )
    for name, what in SERVE_FLAGS.items():
        kind = int if FIELDS[name].type == "int" else None
        serve.add_argument("--" + name.replace("_", "-"), type=kind, help=setting_help(name, what))
    from dynworkers.runtime.daemon import dev

    dev.add_command(commands)

    def client_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", help="the daemon's TOML config, for its address")
        parser.add_argument(
            "--url",
            help=f"control API URL (default: {URL_VARIABLE}, else the running daemon's "
            "<state_dir>/daemon.json, else control_host:control_port from the config)",
        )
        parser.add_argument(
            "--token", help="control token (default: control_token from the config)"
        )
        parser.add_argument(
            "--json", action="store_true", help="print the JSON answer (errors too, on stdout)"
        )
        return parser

    init = commands.add_parser("init", help="write a tenant directory to start from")
    init.add_argument("name", help="the tenant id: a DNS label ([a-z0-9-], up to 63)")
    init.add_argument("--dir", default=".", help="where to create NAME/ (default: here)")

    tenants = commands.add_parser("tenants", help="deploy and list tenant code")
    verbs = tenants.add_subparsers(dest="verb", required=True)
    put = client_options(verbs.add_parser("put", help="deploy a directory of .py modules"))
    put.add_argument("tenant")
    put.add_argument("directory")
    put.add_argument("--main", help="main module (default: main, or the only module)")
    client_options(verbs.add_parser("list", help="tenants and their versions"))
    show = client_options(verbs.add_parser("show", help="a tenant's deployment history"))
    show.add_argument("tenant")
    delete = client_options(
        verbs.add_parser("delete", help="stop serving a tenant (its KV and instances stay)")
    )
    delete.add_argument("tenant")

    workflows = commands.add_parser("workflows", help="a tenant's workflow instances")
    verbs = workflows.add_subparsers(dest="verb", required=True)
    listing = client_options(verbs.add_parser("list", help="a tenant's instances"))
    listing.add_argument("tenant")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=100)
    create = client_options(verbs.add_parser("create", help="create an instance"))
    create.add_argument("tenant")
    create.add_argument("--id")
    create.add_argument("--params", default="null", help="JSON")
    status = client_options(verbs.add_parser("status", help="an instance's status"))
    status.add_argument("tenant")
    status.add_argument("id")
    status.add_argument("--wait", action="store_true", help="follow until it finishes")
    event = client_options(verbs.add_parser("send-event", help="send an event to an instance"))
    event.add_argument("tenant")
    event.add_argument("id")
    event.add_argument("type")
    event.add_argument("--payload", default="null", help="JSON")
    history = client_options(
        verbs.add_parser("history", help="an instance's steps, attempts and timeline")
    )
    history.add_argument("tenant")
    history.add_argument("id")
    for verb in ("pause", "resume", "terminate", "restart"):
        operation = client_options(verbs.add_parser(verb, help=f"{verb} an instance"))
        operation.add_argument("tenant")
        operation.add_argument("id")
        if verb == "restart":
            operation.add_argument("--from-step")

    client_options(commands.add_parser("stats", help="pool, loader and engine figures"))
    logs = client_options(commands.add_parser("logs", help="a tenant's log lines"))
    logs.add_argument("tenant")
    logs.add_argument("--follow", "-f", action="store_true", help="keep streaming new lines")
    logs.add_argument("--tail", type=int, default=100)

    export = commands.add_parser(
        "export", help="write a stopped daemon's SQLite state as a dump (to stdout or --out)"
    )
    export.add_argument("--config", help="the daemon's TOML config, for its state directory")
    export.add_argument("--state-dir", help="the state directory (default from the config)")
    export.add_argument("--out", help="write the dump to this file instead of stdout")
    load = commands.add_parser(
        "import", help="load a dump into a PostgreSQL store (from stdin or --in)"
    )
    load.add_argument("--config", help="the daemon's TOML config, for its store")
    load.add_argument("--store", help="postgresql://user@host/database (default from the config)")
    load.add_argument("--in", dest="input", help="read the dump from this file instead of stdin")
    load.add_argument(
        "--replace", action="store_true", help="overwrite instances, keys and tenants that exist"
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "dev":
            from dynworkers.runtime.daemon import dev

            return dev.run(args)
        if args.command in ("export", "import"):
            return _transfer(args)
        if args.command == "init":
            from dynworkers.runtime.daemon.scaffold import init

            return init(args.name, Path(args.dir))
        return _client_command(args)
    except ConfigError as exc:
        print(f"dynworkers: {exc}", file=sys.stderr)
        return 2


# --- serve ---------------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    from dynworkers.runtime.daemon.logs import daemon_formatter
    from dynworkers.runtime.daemon.server import Daemon, run_loop

    flags = {name: getattr(args, name) for name in SERVE_FLAGS}

    def read() -> DaemonConfig:
        return load_config(args.config, flags)

    config = read()
    handler = logging.StreamHandler()
    handler.setFormatter(daemon_formatter(config.log_format))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dynworkers").setLevel(config.log_level.upper())
    try:
        daemon = Daemon(config, read)
    except (DynworkersError, StoreError) as exc:
        print(f"dynworkers: {exc}", file=sys.stderr)
        return 2
    try:
        return run_loop(daemon.run())
    except (DynworkersError, EngineError, OSError) as exc:
        if daemon.serving:
            raise  # a failure while serving is not a refusal to start
        # at start: the state directory, the store's URL or server, the address
        print(f"dynworkers: cannot start: {exc}", file=sys.stderr)
        return 2


# --- export and import ---------------------------------------------------------------------------


def _transfer(args: argparse.Namespace) -> int:
    """`export` and `import`: exit 0, or 2 with one line saying what to do."""
    from dynworkers.runtime.daemon import transfer, transfer_format

    try:
        if args.command == "export":
            state_dir = Path(args.state_dir or load_config(args.config).state_dir)
            if args.out is None:
                counts = asyncio.run(transfer.export_state(state_dir, sys.stdout.buffer))
            else:
                out = Path(args.out)
                partial = out.with_name(f".{out.name}.partial")
                with partial.open("wb") as file:
                    counts = asyncio.run(transfer.export_state(state_dir, file))
                partial.replace(out)  # a failed export leaves no half dump behind
            print(f"dynworkers: exported {_counted(counts)}", file=sys.stderr)
            return 0
        store = args.store or load_config(args.config).store
        if not store.startswith(("postgresql://", "postgres://")):
            print(
                "dynworkers: import needs a PostgreSQL store: --store postgresql://user@host/db",
                file=sys.stderr,
            )
            return 2
        if args.input is None:
            dump = transfer_format.read(sys.stdin.buffer)
        else:
            with open(args.input, "rb") as file:
                dump = transfer_format.read(file)
        counts = asyncio.run(transfer.import_dump(dump, store, args.replace))
        print(f"dynworkers: imported {_counted(counts)}", file=sys.stderr)
        return 0
    except (DynworkersError, EngineError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, DynworkersError):
            print(f"dynworkers: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        else:
            print(f"dynworkers: {args.command}: {exc}", file=sys.stderr)
        return 2


def _counted(counts: Any) -> str:
    kinds = ("instance", "step", "event", "kv", "code", "deploy", "tenant")
    return ", ".join(f"{counts[k]} {k}" for k in kinds if counts.get(k)) or "nothing"


# --- the control API's wrappers ------------------------------------------------------------------


def _json_arg(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ControlInvalid(f"{name} is not valid JSON: {exc}") from None


def _client_command(args: argparse.Namespace) -> int:
    name = args.command if args.command in ("stats", "logs") else f"{args.command} {args.verb}"
    try:
        try:
            client = ControlClient.discover(args.url, args.token, args.config)
        except ConfigError as exc:
            raise ControlInvalid(str(exc)) from None
        if name == "logs":
            return _logs(client, args)
        answer = COMMANDS[name](client, args)
    except ControlError as exc:
        if args.json:
            print(json.dumps(exc.as_json(), indent=2))
            return exc.exit_code
        print(f"dynworkers: {exc}", file=sys.stderr)
        for problem in exc.answer.get("errors", []):
            where = problem["module"] + (f":{problem['line']}" if problem.get("line") else "")
            print(f"  {where}: {problem['message']}", file=sys.stderr)
        for line in exc.answer.get("traceback", []):
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        PRINTERS.get(name, _print_fields)(answer)
    return 0


def _put(client: ControlClient, args: argparse.Namespace) -> Any:
    folder = Path(args.directory)
    if not folder.is_dir():
        raise ControlInvalid(f"{folder} is not a directory of .py modules")
    modules = read_directory(folder)
    if not modules:
        raise ControlInvalid(f"{folder} holds no .py modules")
    return client.deploy(args.tenant, modules, args.main)


def _status(client: ControlClient, args: argparse.Namespace) -> Any:
    answer = client.status(args.tenant, args.id)
    while args.wait and answer["status"] not in ("complete", "errored", "terminated"):
        print(f"  {time.strftime('%H:%M:%S')}  {answer['status']}", file=sys.stderr)
        time.sleep(1.0)
        answer = client.status(args.tenant, args.id)
    return answer


def _operate(client: ControlClient, args: argparse.Namespace) -> Any:
    if args.verb == "restart":
        return client.restart(args.tenant, args.id, args.from_step or None)
    return getattr(client, args.verb)(args.tenant, args.id)


COMMANDS: dict[str, Callable[[ControlClient, argparse.Namespace], Any]] = {
    "tenants put": _put,
    "tenants list": lambda client, args: client.tenants(),
    "tenants show": lambda client, args: client.tenant(args.tenant),
    "tenants delete": lambda client, args: client.delete_tenant(args.tenant),
    "workflows list": lambda client, args: client.instances(args.tenant, args.status, args.limit),
    "workflows create": lambda client, args: client.create(
        args.tenant, _json_arg(args.params, "--params"), args.id
    ),
    "workflows status": _status,
    "workflows history": lambda client, args: client.get(
        f"/_/tenants/{args.tenant}/instances/{args.id}/history"
    ),
    "workflows send-event": lambda client, args: client.send_event(
        args.tenant, args.id, args.type, _json_arg(args.payload, "--payload")
    ),
    **{f"workflows {verb}": _operate for verb in ("pause", "resume", "terminate", "restart")},
    "stats": lambda client, args: client.stats(),
}


def _logs(client: ControlClient, args: argparse.Namespace) -> int:
    try:
        for line in client.logs(args.tenant, args.tail, args.follow):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(line.get("ts", 0)))
            if args.json:
                print(json.dumps(line), flush=True)
            else:
                print(f"{stamp} {line.get('level', ''):<7} {line.get('message', '')}", flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


# --- printing ------------------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str] | None) -> None:
    """Columns padded to their widest cell; the header line first, when there is one."""
    lines = rows if header is None else [header, *rows]
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]))]
    for row in lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _print_fields(answer: Any) -> None:
    if not isinstance(answer, dict):
        print(json.dumps(answer, indent=2))
        return
    width = max((len(key) for key in answer), default=0)
    for key, value in answer.items():
        text = value if isinstance(value, str) else json.dumps(value)
        print(f"{key:<{width}}  {text}")


def _print_put(answer: dict[str, Any]) -> None:
    verb = "deployed" if answer["changed"] else "already serving"
    print(
        f"{verb} {answer['tenant']} version {answer['version']} "
        f"({len(answer['modules'])} module(s), main {answer['main_module']})"
    )


def _print_deleted(answer: dict[str, Any]) -> None:
    print(f"deleted {answer['tenant']} (it served version {answer['version']})")


def _print_tenants(answer: dict[str, Any]) -> None:
    rows = [
        [
            t["tenant"],
            t["version"],
            t["source"],
            _when(t["deployed_at"]),
            "yes" if t["compiles"] else "NO",
            str(t["sandbox_pid"] or "-"),
        ]
        for t in answer["tenants"]
    ]
    _table(rows, ["TENANT", "VERSION", "SOURCE", "DEPLOYED", "COMPILES", "SANDBOX PID"])


def _print_history(answer: dict[str, Any]) -> None:
    print(f"{answer['tenant']}: serving {answer['current']}")
    rows = [
        [
            e.get("version", "(removed)"),
            e.get("source", "-"),
            _when(e.get("deployed_at")),
        ]
        for e in answer["deployments"]
    ]
    _table(rows, ["VERSION", "SOURCE", "DEPLOYED"])


def _print_instances(answer: dict[str, Any]) -> None:
    rows = [
        [i["id"], i["status"], _when(i["created"]), _when(i["updated"]), i["waiting_for"] or "-"]
        for i in answer["instances"]
    ]
    _table(rows, ["ID", "STATUS", "CREATED", "UPDATED", "WAITING FOR"])


def _print_instance_history(answer: dict[str, Any]) -> None:
    print(f"{answer['id']} ({answer['workflow']}): {answer['status']}")
    rows = []
    for step in answer["steps"]:
        attempts = step["attempts"] or [None]
        for attempt in attempts:
            error = (attempt or {}).get("error")
            rows.append(
                [
                    f"{step['name']}#{step['count']}",
                    step["kind"],
                    str((attempt or {}).get("attempt") or "-"),
                    (attempt or {}).get("outcome") or step["status"],
                    _ms((attempt or {}).get("duration_ms")),
                    "-" if step["result_bytes"] is None else str(step["result_bytes"]),
                    f"{error['name']}: {error['message']}" if error else "-",
                ]
            )
    _table(rows, ["STEP", "KIND", "ATTEMPT", "OUTCOME", "MS", "RESULT BYTES", "ERROR"])
    print()
    for entry in answer["timeline"]:
        extra = {k: v for k, v in entry.items() if k not in ("at", "kind")}
        detail = " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        print(f"  {_when(entry['at'])}  {entry['kind']:<12} {detail}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _print_stats(answer: dict[str, Any]) -> None:
    pool, workflows = answer["pool"], answer.get("workflows", {})
    rows = [
        ["sandboxes", f"{pool['size']} of {pool['max_sandboxes']}"],
        ["spares", str(pool["spares"])],
        ["starts", f"{answer['cold']} cold, {answer['warm']} warm"],
        ["rehydrations", str(answer["rehydrations"])],
        ["boot latency ms", _percentiles(answer["boot_latency_ms"])],
        ["evictions", ", ".join(f"{k} {v}" for k, v in answer["evictions"].items() if v) or "none"],
        [
            "workflows",
            f"{workflows.get('running', 0)} running, {workflows.get('ready', 0)} ready, "
            f"{workflows.get('hibernating', 0)} hibernating",
        ],
        ["requests in flight", str(answer.get("daemon", {}).get("in_flight", 0))],
        ["uptime s", str(answer["uptime_s"])],
    ]
    _table(rows, None)


def _percentiles(figures: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.2f}" for name, value in figures.items())


PRINTERS: dict[str, Callable[[Any], None]] = {
    "tenants put": _print_put,
    "tenants list": _print_tenants,
    "tenants show": _print_history,
    "tenants delete": _print_deleted,
    "workflows list": _print_instances,
    "workflows history": _print_instance_history,
    "stats": _print_stats,
}
