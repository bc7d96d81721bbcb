"""The one settings object: a YAML file (`--config`), every key optional, validated at start."""

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kubernaut.domain.approval import ApprovalPolicy
from kubernaut.domain.dryrun import HOLD_PERIOD
from kubernaut.domain.duration import parse_go_duration
from kubernaut.domain.effectiveness import EffectivenessPolicy
from kubernaut.domain.gates import GatePolicy
from kubernaut.domain.remediation import TimeoutPolicy
from kubernaut.domain.routing import RoutingPolicy
from kubernaut.errors import ConfigError


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a Go duration such as 90s, 5m or 1h30m")
    try:
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        return parse_go_duration(value)
    except OverflowError:  # 1e9h, .inf: a ValueError names the key, an OverflowError would crash the start
        raise ValueError("duration out of range") from None


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ExecutionConfig(Section):
    namespace: str = Field(default="kubernaut-workflows", min_length=1, description="Where PipelineRuns run.")
    service_account: str = Field(
        default="kubernaut-workflow-runner", min_length=1, description="ServiceAccount of workflow tasks."
    )
    cooldown: Duration = Field(default=timedelta(minutes=5), description="How long the lock is held after a run ends.")

    @field_validator("cooldown")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


_ROUTING = RoutingPolicy()
_TIMEOUTS = TimeoutPolicy()


class RoutingConfig(Section):
    consecutive_failure_threshold: int = Field(default=_ROUTING.consecutive_failure_threshold, ge=1)
    consecutive_failure_cooldown: Duration = _ROUTING.consecutive_failure_cooldown
    recently_remediated_cooldown: Duration = _ROUTING.recently_remediated_cooldown
    backoff_base: Duration = _ROUTING.backoff_base
    backoff_max: Duration = _ROUTING.backoff_max
    backoff_jitter_percent: int = Field(default=_ROUTING.backoff_jitter_percent, ge=0, le=100)

    def policy(self) -> RoutingPolicy:
        """The values the routing decisions take."""
        return RoutingPolicy(
            consecutive_failure_threshold=self.consecutive_failure_threshold,
            consecutive_failure_cooldown=self.consecutive_failure_cooldown,
            recently_remediated_cooldown=self.recently_remediated_cooldown,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            backoff_jitter_percent=self.backoff_jitter_percent,
        )

    @field_validator("consecutive_failure_cooldown", "backoff_base", "backoff_max")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    @field_validator("recently_remediated_cooldown")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


_EFFECTIVENESS = EffectivenessPolicy()


class EffectivenessConfig(Section):
    """The Verifying phase and the IneffectiveChain routing check."""

    window: Duration = Field(
        default=_EFFECTIVENESS.window, description="How long to wait for the alert to resolve after a run."
    )
    prometheus_url: str = Field(
        default="", description="Prometheus base URL for workflows' spec.verification.promql; empty: none."
    )
    ineffective_chain_threshold: int = Field(
        default=_ROUTING.ineffective_chain_threshold, ge=1, description="Ineffective outcomes in a row that block."
    )
    ineffective_chain_cooldown: Duration = Field(
        default=_ROUTING.ineffective_chain_cooldown, description="How long an IneffectiveChain block lasts."
    )

    @field_validator("window", "ineffective_chain_cooldown")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    def policy(self) -> EffectivenessPolicy:
        return EffectivenessPolicy(window=self.window, prometheus_url=self.prometheus_url)


_GATES = GatePolicy()


class ScopeConfig(Section):
    """Opt-in scope: kubernaut remediates only targets whose namespace (a cluster-scoped target
    itself) carries kubernaut.ai/managed=true."""

    require_managed_label: bool = Field(
        default=_GATES.require_managed_label, description="Block requests on targets that have not opted in."
    )
    unmanaged_timeout: Duration = Field(
        default=_GATES.unmanaged_timeout, description="A request blocked as unmanaged fails after this."
    )

    @field_validator("unmanaged_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


class PerNamespaceLimitsConfig(Section):
    max_executions_per_hour: int = Field(default=_GATES.max_executions_per_namespace_per_hour, ge=1)


class LimitsConfig(Section):
    """Rate limits, counted from the WorkflowExecutions (created within the last hour, or running)."""

    max_concurrent_executions: int = Field(default=_GATES.max_concurrent_executions, ge=1)
    max_executions_per_hour: int = Field(default=_GATES.max_executions_per_hour, ge=1)
    per_namespace: PerNamespaceLimitsConfig = PerNamespaceLimitsConfig()


class BreakerConfig(Section):
    """The circuit breaker: this many execution failures cluster-wide within the window open it."""

    failure_threshold: int = Field(default=_GATES.breaker_failure_threshold, ge=1)
    window: Duration = _GATES.breaker_window

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


class TimeoutsConfig(Section):
    global_: Duration = Field(default=_TIMEOUTS.global_, alias="global")
    analyzing: Duration = _TIMEOUTS.analyzing
    executing: Duration = _TIMEOUTS.executing

    def policy(self) -> TimeoutPolicy:
        """The default timeouts the timeout decision takes."""
        return TimeoutPolicy(global_=self.global_, analyzing=self.analyzing, executing=self.executing)


class AuditConfig(Section):
    url: str = Field(default="sqlite:///var/lib/kubernaut/audit.db", description="sqlite:///PATH or postgresql://...")
    batch_size: int = Field(default=100, ge=1, description="Most events sent to the store in one transaction.")
    flush_interval: Duration = Field(
        default=timedelta(milliseconds=200), description="Longest wait before recorded events are sent to the store."
    )
    buffer_path: str = Field(
        default="",
        description="Durable outbox file; when empty, next to the SQLite file, or audit-outbox.db under the state dir.",
    )
    buffer_max_events: int = Field(
        default=100_000, ge=1, description="Outbox capacity; beyond it recording fails loudly instead of dropping."
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="How long to try reaching PostgreSQL at start and per attempt."
    )
    close_timeout: Duration = Field(
        default=timedelta(seconds=10), description="How long shutdown waits to deliver the outbox to the store."
    )

    @field_validator("flush_interval", "connect_timeout", "close_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
            raise ValueError("must start with sqlite:///, postgresql:// or memory://")
        return value


class LeaderElectionConfig(Section):
    """One active replica per Lease; the others keep warm caches and take over when it goes."""

    enabled: bool = Field(default=False, description="Reconcile only while holding the Lease.")
    namespace: str = Field(default="kubernaut-system", min_length=1, description="Where the Lease lives.")
    lease_name: str = Field(default="", description="Lease name; empty: kubernaut-<controllers joined by '-'>.")
    lease_duration: Duration = Field(
        default=timedelta(seconds=15), description="How long a standby waits after the last renewal seen."
    )
    renew_deadline: Duration = Field(
        default=timedelta(seconds=10), description="The leader stops reconciling if it cannot renew within this."
    )
    retry_period: Duration = Field(default=timedelta(seconds=2), description="Interval of acquire and renew tries.")

    @model_validator(mode="after")
    def _ordered(self) -> "LeaderElectionConfig":
        if not timedelta(0) < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retryPeriod < renewDeadline < leaseDuration")
        return self


class AdmissionWebhookConfig(Section):
    """The HTTPS admission webhook (identity of block clearance, validation of our kinds)."""

    address: str = Field(default="", description="host:port to serve on, e.g. 0.0.0.0:9443; empty: not served.")
    cert_dir: str = Field(
        default="/tmp/k8s-webhook-server/serving-certs", description="Directory holding tls.crt and tls.key."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _listen_address(value) if value else value


class ManagerConfig(Section):
    """How `kubernaut run` runs: probes and metrics, leader election, shutdown, admission webhook."""

    metrics_address: str = Field(
        default="0.0.0.0:9090", description="host:port of /metrics, /healthz and /readyz; empty: not served."
    )
    shutdown_grace_period: Duration = Field(
        default=timedelta(seconds=25), description="After SIGTERM the process exits within this, whatever happens."
    )
    resync_period: Duration = Field(
        default=timedelta(seconds=30),
        description="Every object that is not finished is reconciled again at least this often, events or not.",
    )
    leader_election: LeaderElectionConfig = LeaderElectionConfig()
    admission_webhook: AdmissionWebhookConfig = AdmissionWebhookConfig()

    @field_validator("metrics_address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _listen_address(value) if value else value

    @field_validator("shutdown_grace_period", "resync_period")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


class ClientConfig(Section):
    """The API client of `kubernaut run`: a token bucket in front of every request it sends.

    client-go's defaults (QPS 5 / burst 10 for a rest.Config, 20 / 30 in controller-runtime) are
    sized for a controller's trickle. Here one process runs up to three controllers with 32 workers
    each, and a remediation costs about 10 requests: the orchestrator and executor in one process
    reach some 240 requests a second on a 2-core benchmark (docs/performance.md, 24 remediations/s),
    so a limit of 200 would become the system's bottleneck. 500 a second stays above that and still
    bounds a runaway loop; a burst of 1000 (two seconds' worth) lets a start's LISTs and watches and
    a storm of alerts go out at once. API Priority and Fairness still applies on the server."""

    qps: float = Field(default=500.0, gt=0, allow_inf_nan=False, description="Sustained requests a second.")
    burst: int = Field(default=1000, ge=1, description="Requests allowed at once above the sustained rate.")

    @field_validator("qps", "burst", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a positive number")
        return value


def _listen_address(value: str) -> str:
    match = _LISTEN.match(value)
    if not match or int(match.group("port")) > 65535:
        raise ValueError("expected host:port, e.g. 0.0.0.0:9090 or 127.0.0.1:0")
    return value


_SECRET_REF = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?:[-._a-zA-Z0-9]+$")
_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d{1,5})$")


def _secret_ref(value: str) -> str:
    if value and not _SECRET_REF.match(value):
        raise ValueError("expected a Secret key reference 'namespace/name:key'")
    return value


class GatewayConfig(Section):
    """The Alertmanager intake (`kubernaut run --controllers gateway`)."""

    listen: str = Field(default="127.0.0.1:8080", description="host:port to bind; port 0 picks a free one.")
    namespace: str = Field(default="kubernaut-system", min_length=1, description="Where RemediationRequests go.")
    bearer_token_file: str = Field(default="", description="File holding the bearer token clients must send.")
    bearer_token_secret: str = Field(default="", description="Secret key 'namespace/name:key' holding the token.")
    auth_disabled: bool = Field(default=False, description="Accept requests without a token (local use only).")
    tls_cert_file: str = Field(default="", description="PEM certificate; serve HTTPS when set with tlsKeyFile.")
    tls_key_file: str = Field(default="", description="PEM private key of tlsCertFile.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    max_alerts: int = Field(default=1000, ge=1, description="More alerts in one request get 400.")
    concurrency: int = Field(default=16, ge=1, le=256, description="Alerts of one request handled in parallel.")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if not match or int(match.group("port")) > 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8443")
        return value

    @field_validator("bearer_token_secret")
    @classmethod
    def _token_ref(cls, value: str) -> str:
        return _secret_ref(value)

    @model_validator(mode="after")
    def _consistent(self) -> "GatewayConfig":
        if self.bearer_token_file and self.bearer_token_secret:
            raise ValueError("set bearerTokenFile or bearerTokenSecret, not both")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tlsCertFile and tlsKeyFile go together")
        return self


class WebhookChannelConfig(Section):
    url: str = Field(default="", description="Endpoint of the webhook channel (http or https).")
    url_secret: str = Field(default="", description="Secret key 'namespace/name:key' holding the URL instead.")
    signing_secret: str = Field(default="", description="Secret key holding the HMAC-SHA256 signing key.")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Per-request timeout.")

    @field_validator("url_secret", "signing_secret")
    @classmethod
    def _refs(cls, value: str) -> str:
        return _secret_ref(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def configured(self) -> bool:
        return bool(self.url or self.url_secret)


class SlackChannelConfig(Section):
    webhook_url_secret: str = Field(default="", description="Secret key holding the Slack incoming-webhook URL.")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Per-request timeout.")
    signing_secret_ref: str = Field(
        default="",
        description="Secret key holding the Slack app's signing secret: approval messages carry Approve and "
        "Reject buttons, and the gateway accepts their clicks at /api/v1/slack/interactions.",
    )

    @field_validator("webhook_url_secret", "signing_secret_ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        return _secret_ref(value)

    @property
    def configured(self) -> bool:
        return bool(self.webhook_url_secret)


class EmailChannelConfig(Section):
    smtp_host: str = Field(default="", description="SMTP server host.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS.")
    username: str = Field(default="", description="SMTP login name (no login when empty).")
    password_secret: str = Field(default="", description="Secret key holding the SMTP password.")
    sender: str = Field(default="kubernaut@localhost", alias="from", description="From address.")
    to: list[str] = Field(default_factory=list, description="Recipient addresses.")
    timeout: Duration = Field(default=timedelta(seconds=30), description="Per-message timeout.")

    @field_validator("password_secret")
    @classmethod
    def _ref(cls, value: str) -> str:
        return _secret_ref(value)

    @property
    def configured(self) -> bool:
        return bool(self.smtp_host and self.to)


class NotifierConfig(Section):
    """Delivery of NotificationRequests: retry policy and channel endpoints."""

    max_attempts: int = Field(default=5, ge=1, le=100, description="Tries per channel before giving up.")
    backoff_base: Duration = Field(default=timedelta(seconds=1), description="Wait after the first failure.")
    backoff_max: Duration = Field(default=timedelta(minutes=1), description="Longest wait between tries.")
    webhook: WebhookChannelConfig = WebhookChannelConfig()
    slack: SlackChannelConfig = SlackChannelConfig()
    email: EmailChannelConfig = EmailChannelConfig()

    @field_validator("backoff_base", "backoff_max")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


_CHANNELS = {"email", "slack", "teams", "sms", "webhook", "console", "file", "log"}


class NotificationsConfig(Section):
    """Channels of the notifications the orchestrator creates, by priority."""

    critical: list[str] = Field(default_factory=lambda: ["slack", "email"])
    high: list[str] = Field(default_factory=lambda: ["slack", "email"])
    medium: list[str] = Field(default_factory=lambda: ["slack"])
    low: list[str] = Field(default_factory=lambda: ["slack"])

    @field_validator("critical", "high", "medium", "low")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - _CHANNELS)
        if unknown or not value:
            raise ValueError(f"channels must be a non-empty list of {', '.join(sorted(_CHANNELS))}")
        return value

    def for_priority(self, priority: str) -> list[str]:
        return list(getattr(self, priority, self.medium))


_APPROVAL = ApprovalPolicy()


class ApprovalRequiredFor(Section):
    """Requests that need approval whatever their workflow says: any match."""

    severities: list[str] = Field(default_factory=list, description="Signal severities, e.g. [critical].")
    target_kinds: list[str] = Field(default_factory=list, description="Target kinds, e.g. [StatefulSet, Node].")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces of the requests.")


class ApprovalConfig(Section):
    """Who needs a person's yes before running, how long the person has, and who may say it in Slack."""

    required_for: ApprovalRequiredFor = ApprovalRequiredFor()
    timeout: Duration = Field(default=_APPROVAL.timeout, description="From the request for approval to expiry.")
    slack_approvers: dict[str, str] = Field(
        default_factory=dict, description="Slack user id -> approver name; only these may decide from Slack."
    )

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value

    def policy(self) -> ApprovalPolicy:
        wanted = self.required_for
        return ApprovalPolicy(
            severities=frozenset(wanted.severities),
            target_kinds=frozenset(wanted.target_kinds),
            namespaces=frozenset(wanted.namespaces),
            timeout=self.timeout,
        )


class DryRunConfig(Section):
    """`dryRun: true` (or `dryRun: {enabled: true}`): every request validates instead of running."""

    enabled: bool = Field(default=False, description="Every request is a dry run.")
    hold_period: Duration = Field(
        default=HOLD_PERIOD,
        description="After a dry run, repeats of its signal fold into it this long (the gateway does not loop).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("hold_period")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than 0")
        return value


class Settings(Section):
    manager: ManagerConfig = ManagerConfig()
    client: ClientConfig = ClientConfig()
    execution: ExecutionConfig = ExecutionConfig()
    routing: RoutingConfig = RoutingConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    effectiveness: EffectivenessConfig = EffectivenessConfig()
    audit: AuditConfig = AuditConfig()
    gateway: GatewayConfig = GatewayConfig()
    notifier: NotifierConfig = NotifierConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    approval: ApprovalConfig = ApprovalConfig()
    dry_run: DryRunConfig = DryRunConfig()
    scope: ScopeConfig = ScopeConfig()
    limits: LimitsConfig = LimitsConfig()
    breaker: BreakerConfig = BreakerConfig()

    def routing_policy(self) -> RoutingPolicy:
        """The routing section's policy with the IneffectiveChain check's settings."""
        return replace(
            self.routing.policy(),
            ineffective_chain_threshold=self.effectiveness.ineffective_chain_threshold,
            ineffective_chain_cooldown=self.effectiveness.ineffective_chain_cooldown,
        )

    def gate_policy(self) -> GatePolicy:
        """The values the gates of routing take."""
        return GatePolicy(
            require_managed_label=self.scope.require_managed_label,
            unmanaged_timeout=self.scope.unmanaged_timeout,
            max_concurrent_executions=self.limits.max_concurrent_executions,
            max_executions_per_hour=self.limits.max_executions_per_hour,
            max_executions_per_namespace_per_hour=self.limits.per_namespace.max_executions_per_hour,
            breaker_failure_threshold=self.breaker.failure_threshold,
            breaker_window=self.breaker.window,
        )


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_settings(data: dict[str, Any] | None) -> Settings:
    """Validate a config mapping; a ConfigError names the first offending key."""
    try:
        return Settings.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _key_path(first["loc"])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"unknown configuration key '{key}'") from None
        raise ConfigError(f"invalid value for '{key}': {first['msg']}") from None


def load_settings(path: Path | None) -> Settings:
    """Read the YAML file (defaults when None)."""
    if path is None:
        return Settings()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a settings file") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return parse_settings(raw)
