"""The `kubernaut` command line."""

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kubernaut.cli.audit import audit_app
from kubernaut.cli.breaker import breaker_app
from kubernaut.cli.output import command_group
from kubernaut.cli.remediations import register as register_remediation_commands
from kubernaut.cli.ui import register as register_ui_command
from kubernaut.config import Settings, load_settings
from kubernaut.errors import ConfigError, ControlPlaneError

app = command_group(
    "kubernaut: automated remediation for Kubernetes. The orchestrator decides whether a "
    "RemediationRequest may run a workflow now; the executor runs it as a Tekton PipelineRun "
    "whose name locks the target."
)
dev_app = command_group("The local default: a control plane on this machine.")
app.add_typer(dev_app, name="dev")
app.add_typer(audit_app, name="audit")
app.add_typer(breaker_app, name="breaker")
register_remediation_commands(app)
register_ui_command(app)
console = Console(stderr=True, soft_wrap=True)  # piped, a path is not cut at 80 columns

ALL_CONTROLLERS = ("orchestrator", "executor", "notifier")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (execution, routing, timeouts, audit). Every key optional."),
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _controllers(value: str, known: tuple[str, ...] = ALL_CONTROLLERS) -> tuple[str, ...]:
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [name for name in names if name not in known]
    if unknown:
        _fail(f"unknown controller(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def _setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    """Logs go to stderr, or to `log_file` (started afresh) so they do not interleave with what
    the command prints; errors are shown on stderr either way."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers[0].setLevel(logging.ERROR)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        handlers=handlers,
    )
    for noisy in ("httpx", "httpx2", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dev_app.command("up")
def dev_up(
    config: ConfigOption = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Where the control plane keeps its data, kubeconfig and endpoints.json."),
    ] = Path(".kubernaut/dev"),
    no_controllers: Annotated[
        bool, typer.Option("--no-controllers", help="Start only the control plane (and Tekton).")
    ] = False,
    no_tekton: Annotated[
        bool,
        typer.Option(
            "--no-tekton",
            help="Do not run Tekton Pipelines (its CRDs only): PipelineRuns then stay unstarted. "
            "Starts faster; for the Job engine, or to play Tekton's part yourself.",
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Play a scripted story of remediations (success, duplicate, busy target, cooldown, backoff, "
            "execution failure and clearing it) with a live table.",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logs on stderr instead of STATE_DIR/operator.log.")
    ] = False,
) -> None:
    """Run the whole system locally.

    The local control plane (kube-apiserver, controller manager, scheduler and kwok with a fake
    node, no kubelet), Tekton Pipelines' controller and resolvers with a registry holding the sample
    workflow bundles, CRDs, the sample catalog and all controllers, with a SQLite audit store under
    the state dir. kwok plays each task's pod as its bundle's name says (config/samples/workflows.yaml).
    Runs until Ctrl-C (SIGINT) or SIGTERM, then stops everything."""
    settings = _settings(config)
    log_file = None if verbose else state_dir.resolve() / "operator.log"
    _setup_logging(verbose, log_file)
    from kubernaut.devcluster.devup import run_dev_up

    try:
        asyncio.run(
            run_dev_up(
                settings,
                state_dir=state_dir.resolve(),
                controllers=() if no_controllers else ALL_CONTROLLERS,
                tekton=not no_tekton,
                announce=lambda text: console.print(text),
                demo=demo,
                log_file=log_file,
            )
        )
    except (ConfigError, ControlPlaneError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command("run")
def run(
    config: ConfigOption = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Kubeconfig file; else $KUBECONFIG, ~/.kube/config or in-cluster."),
    ] = None,
    controllers: Annotated[
        str,
        typer.Option(
            "--controllers", help="Comma-separated subset of orchestrator,executor,notifier,gateway (the intake)."
        ),
    ] = ",".join(ALL_CONTROLLERS),
    leader_elect: Annotated[
        bool | None,
        typer.Option(
            "--leader-elect/--no-leader-elect",
            help="Reconcile only while holding a Lease, so that replicas never act at once.",
        ),
    ] = None,
    leader_election_namespace: Annotated[
        str | None,
        typer.Option("--leader-election-namespace", help="Namespace of the Lease (default: kubernaut-system)."),
    ] = None,
    leader_election_id: Annotated[
        str | None, typer.Option("--leader-election-id", help="Lease name (default: kubernaut-<controllers>).")
    ] = None,
    metrics_address: Annotated[
        str | None,
        typer.Option(
            "--metrics-address",
            help="host:port of /metrics, /healthz and /readyz, '' to disable (default: 0.0.0.0:9090).",
        ),
    ] = None,
    webhook_address: Annotated[
        str | None,
        typer.Option("--webhook-address", help="Serve the admission webhook on host:port, e.g. 0.0.0.0:9443."),
    ] = None,
    webhook_cert_dir: Annotated[
        str | None, typer.Option("--webhook-cert-dir", help="Directory with the webhook's tls.crt and tls.key.")
    ] = None,
    shutdown_grace_period: Annotated[
        str | None,
        typer.Option("--shutdown-grace-period", help="After SIGTERM, exit within this Go duration (default: 25s)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")] = False,
) -> None:
    """Run the controllers on a cluster (production mode).

    Runs against an existing cluster. SIGTERM stops taking work, lets reconciles in flight
    finish, releases the Lease and exits within the grace period."""
    settings = _with_run_flags(
        _settings(config),
        {"enabled": leader_elect, "namespace": leader_election_namespace, "lease_name": leader_election_id},
        {"address": webhook_address, "cert_dir": webhook_cert_dir},
        {"metrics_address": metrics_address, "shutdown_grace_period": shutdown_grace_period},
    )
    names = _controllers(controllers, (*ALL_CONTROLLERS, "gateway"))
    _setup_logging(verbose)
    from lightkube.core.exceptions import ConfigError as KubeConfigError

    from kubernaut.controllers.manager import run_manager
    from kubernaut.kube.leader import LeadershipLostError

    try:
        asyncio.run(run_manager(settings, kubeconfig=kubeconfig, controllers=names))
    except ConfigError as exc:
        _fail(str(exc))
    except KubeConfigError as exc:  # no usable kubeconfig or in-cluster credentials
        _fail(f"kubeconfig: {exc}")
    except LeadershipLostError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


_RUN_FLAGS = {
    "namespace": "--leader-election-namespace",
    "lease_name": "--leader-election-id",
    "address": "--webhook-address",
    "cert_dir": "--webhook-cert-dir",
    "metrics_address": "--metrics-address",
    "shutdown_grace_period": "--shutdown-grace-period",
}


def _with_run_flags(
    settings: Settings, leader: dict[str, object], webhook: dict[str, object], manager: dict[str, object]
) -> Settings:
    """Flags given on the command line override the `manager` section of the config file."""
    from pydantic import ValidationError

    from kubernaut.config import AdmissionWebhookConfig, LeaderElectionConfig, ManagerConfig

    current = settings.manager
    try:
        election = LeaderElectionConfig.model_validate(
            {**current.leader_election.model_dump(), **{k: v for k, v in leader.items() if v is not None}}
        )
        admission = AdmissionWebhookConfig.model_validate(
            {**current.admission_webhook.model_dump(), **{k: v for k, v in webhook.items() if v is not None}}
        )
        merged = ManagerConfig.model_validate(
            {
                **current.model_dump(exclude={"leader_election", "admission_webhook"}),
                **{k: v for k, v in manager.items() if v is not None},
                "leader_election": election,
                "admission_webhook": admission,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][-1]) if first["loc"] else ""
        _fail(f"invalid value for {_RUN_FLAGS.get(field, field)}: {first['msg']}")
        raise  # unreachable
    return settings.model_copy(update={"manager": merged})
