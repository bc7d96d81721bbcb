"""The one settings object: a YAML file (`--config`), every key optional, validated at start."""

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from kubernaut.domain.duration import parse_go_duration
from kubernaut.errors import ConfigError


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a Go duration such as 90s, 5m or 1h30m")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return parse_go_duration(value)


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


class RoutingConfig(Section):
    consecutive_failure_threshold: int = Field(default=3, ge=1)
    consecutive_failure_cooldown: Duration = timedelta(hours=1)
    recently_remediated_cooldown: Duration = timedelta(minutes=5)
    backoff_base: Duration = timedelta(minutes=1)
    backoff_max: Duration = timedelta(minutes=10)
    backoff_jitter_percent: int = Field(default=10, ge=0, le=100)

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


class TimeoutsConfig(Section):
    global_: Duration = Field(default=timedelta(hours=1), alias="global")
    analyzing: Duration = timedelta(minutes=10)
    executing: Duration = timedelta(minutes=30)


class AuditConfig(Section):
    url: str = Field(default="sqlite:///var/lib/kubernaut/audit.db", description="sqlite:///PATH or postgresql://...")
    batch_size: int = Field(default=100, ge=1)
    flush_interval: Duration = timedelta(milliseconds=200)
    buffer_path: str = Field(default="", description="Durable outbox file; next to the SQLite file when empty.")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
            raise ValueError("must start with sqlite:///, postgresql:// or memory://")
        return value


class Settings(Section):
    execution: ExecutionConfig = ExecutionConfig()
    routing: RoutingConfig = RoutingConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    audit: AuditConfig = AuditConfig()


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
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return parse_settings(raw)
