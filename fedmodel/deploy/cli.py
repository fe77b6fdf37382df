"""``fedmodel deploy ...``: the helpers for multi-machine runs on Flower's deployment engine.

See ``docs/deployment.md`` for the runbook these commands belong to.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_RUNNING = 3


def _config(args: argparse.Namespace) -> Any:
    from fedmodel.cli import parse_assignments
    from fedmodel.federated.simulate import read_settings, settings_to_config

    values = read_settings(getattr(args, "config", None))
    values.update(parse_assignments(args.set, flag="--set", snake_case=False))
    return settings_to_config(values)


def cmd_certs(args: argparse.Namespace) -> int:
    from fedmodel.deploy.certs import federation_snippet, make_ca, make_server_certificate

    out = Path(args.out)
    created = not out.exists()
    ca = make_ca(out, force=args.force)
    try:
        server = make_server_certificate(out, ca=ca, hosts=args.host, force=args.force)
    except BaseException:  # nothing half-made: a CA without its server certificate is removed again
        for path in (ca.cert, ca.key):
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"CA certificate     {ca.cert}   (copy to every client host and to where you run `flwr run`)")
    print(f"CA key             {ca.key}   (0600; keep it off the server, it signs certificates)")
    print(f"server certificate {server.cert}  for {', '.join(args.host)}")
    print(f"server key         {server.key}  (0600; SuperLink host only)")
    print("\nflower-superlink --ssl-ca-certfile", ca.cert, "--ssl-certfile", server.cert, "--ssl-keyfile", server.key)
    print("\n# pyproject.toml of the app you `flwr run`:")
    print(federation_snippet(name=args.federation, address=f"{args.host[0]}:9093", ca=ca.cert.resolve()))
    return 0


def cmd_node_keys(args: argparse.Namespace) -> int:
    from fedmodel.deploy.certs import make_node_keys

    out = Path(args.out)
    names = args.name or [f"node-{i:03d}" for i in range(args.nodes)]
    for name in names:
        keys = make_node_keys(out, name, force=args.force)
        print(f"{name}: private {keys.private} (0600, stays on its client host), public {keys.public}")
        print(f"  register (where you run flwr):  flwr supernode register {keys.public} . {args.federation}")
        print(f"  on the client host:            flower-supernode ... --auth-supernode-private-key {keys.private.name}")
    return 0


def cmd_export_data(args: argparse.Namespace) -> int:
    from fedmodel.federated.node_data import export_shards

    config = _config(args)
    manifest = export_shards(config, Path(args.out))
    print(f"wrote {config.num_clients} client files and {manifest}")
    print("copy client-NNN.npz to client host NNN and start its SuperNode with --node-config \"data-path='...'\"")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from fedmodel.federated.node_data import DataSpec, check_node_data

    if args.manifest:
        manifest = json.loads(Path(args.manifest).read_text())
        spec = DataSpec.from_config(manifest["spec"])
    else:
        from fedmodel.federated.shards import dataset_for

        spec = DataSpec.of(dataset_for(_config(args)))
    summary = check_node_data(Path(args.file), spec)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from fedmodel.deploy.executor import run_executor

    run_executor(args.clientappio_api_address, flwr_dir=args.flwr_dir)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fedmodel.deploy.control import ControlClient

    with ControlClient(args.address, ca=Path(args.ca) if args.ca else None) as control:
        state = control.wait(args.run_id, timeout=args.wait) if args.wait else control.run_state(args.run_id)
    print(f"run {state.run_id}: {state.describe()}")
    if state.succeeded:
        return 0
    return EXIT_FAILED if state.finished else EXIT_RUNNING


def cmd_trial(args: argparse.Namespace) -> int:
    from fedmodel.deploy.trial import run_trial
    from fedmodel.rundir import default_run_dir

    config = _config(args)
    workdir = Path(args.workdir) if args.workdir else default_run_dir("deploy-trial", config.model, config.dataset)
    try:
        status, _ = run_trial(config, workdir, warm=not args.cold, timeout=args.timeout)
    except KeyboardInterrupt:
        print(
            f"fedmodel: interrupted; every process stopped. Resume with the same command and --workdir {workdir}",
            file=sys.stderr,
        )
        return 130
    return status


def add_parser(sub: argparse._SubParsersAction) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="multi-machine runs: certificates, node keys, node data, a one-machine trial (docs/deployment.md)",
        description="Helpers for running fedmodel on Flower's deployment engine across machines. "
        "See docs/deployment.md for the full runbook.",
    )
    cmds = deploy.add_subparsers(dest="deploy_command", required=True)

    def settings(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", help="TOML file with the run's settings (as for `fedmodel simulate`)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")

    p = cmds.add_parser("certs", help="a CA and the SuperLink's TLS certificate for the given host names/IPs")
    p.add_argument("--out", required=True, help="directory to write ca.crt, ca.key, server.pem, server.key")
    p.add_argument("--host", action="append", required=True, help="server host name or IP (repeat for several)")
    p.add_argument("--federation", default="deployment", help="federation name for the pyproject snippet")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_certs)

    p = cmds.add_parser("node-keys", help="ECDSA P-384 key pairs for SuperNode authentication")
    p.add_argument("--out", required=True, help="directory for NAME.key (private, 0600) and NAME.pub")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--nodes", type=int, help="make node-000 ... node-(N-1)")
    group.add_argument("--name", action="append", help="a node name (repeat for several)")
    p.add_argument("--federation", default="deployment", help="federation name in the printed commands")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_node_keys)

    p = cmds.add_parser("export-data", help="write each client's shard of a configured dataset as its own .npz")
    settings(p)
    p.add_argument("--out", required=True, help="new directory for client-NNN.npz and manifest.json")
    p.set_defaults(func=cmd_export_data)

    p = cmds.add_parser("check-data", help="check a node's data file against a run's model before it joins")
    p.add_argument("file", help="the node's .npz")
    settings(p)
    p.add_argument("--manifest", help="manifest.json from export-data (instead of the run's settings)")
    p.set_defaults(func=cmd_check_data)

    p = cmds.add_parser("exec", help="a warm ClientApp executor for a SuperNode started with --isolation process")
    p.add_argument("--clientappio-api-address", default="127.0.0.1:9094")
    p.add_argument("--flwr-dir", help="the SuperNode's --flwr-dir")
    p.set_defaults(func=cmd_exec)

    p = cmds.add_parser("status", help="a run's Flower status as an exit code (0 completed, 1 failed, 3 running)")
    p.add_argument("run_id", type=int)
    p.add_argument("--address", default="127.0.0.1:9093", help="the SuperLink's Control API")
    p.add_argument("--ca", help="CA certificate (omit only for an insecure SuperLink)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait up to this long to finish")
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser(
        "trial",
        help="the real deployment on this machine: TLS SuperLink, N authenticated SuperNodes, flwr run",
        description="Start a TLS SuperLink with node authentication and num-clients SuperNodes (each with its own "
        "exported data file) on loopback, run the settings through `flwr run`, print each round, and stop every "
        "process (also on Ctrl-C). Exit 0 only if Flower reports the run completed and every round counted.",
    )
    settings(p)
    p.add_argument("--workdir", help="new directory for certificates, keys, data, logs and the run (default runs/)")
    p.add_argument("--cold", action="store_true", help="Flower's default: a new ClientApp process per message")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
    p.set_defaults(func=cmd_trial)
