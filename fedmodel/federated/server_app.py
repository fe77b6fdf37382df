"""The Flower ServerApp: settings from the run config (or given), then :func:`run_server`."""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmodel.federated.config import FederatedConfig
from fedmodel.federated.report import write_report
from fedmodel.federated.server import check_run_dir, run_server
from fedmodel.rundir import default_run_dir


def make_server_app(config: FederatedConfig | None = None) -> ServerApp:
    """A ServerApp; ``config`` fixed (``fedmodel simulate``) or read from ``context.run_config`` (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or FederatedConfig.from_mapping(dict(context.run_config))
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("federated", cfg.model, cfg.dataset)
        check_run_dir(run_dir, cfg)
        print(f"run directory: {run_dir.resolve()}", file=sys.stderr, flush=True)
        state = run_server(grid, cfg, run_dir=run_dir)
        write_report(run_dir)
        if config is None and (state.failed or state.failed_rounds):
            # Under `flwr run` Flower then marks the run finished:failed (and `fedmodel deploy status` exits
            # non-zero); `fedmodel simulate` (config given) reads the failure from run.json instead.
            reason = state.stop_reason or f"rounds {state.failed_rounds} had fewer replies than min-replies"
            raise RuntimeError(f"federated run failed: {reason}")

    return app
