"""A real Prometheus scraping `kubernaut run` processes (orchestrator, executor, notifier) every second
while remediations succeed, are blocked and fail: every query of the Grafana dashboard is valid, the
panels the scenario exercises return data, and Prometheus loads the alert rules."""

import asyncio
import contextlib
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml

from kubernaut.devcluster.controlplane import free_port
from kubernaut.kube.resources import NotificationRequestResource, RemediationRequestResource
from kubernaut.paths import project_dir
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    OperatorProcess,
    ProductionCluster,
    cluster,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played
from tests.prometheus_tools import prometheus_tool

__all__ = ["cluster"]  # the fixture, imported for pytest

DASHBOARD = project_dir() / "config" / "grafana" / "kubernaut.json"
RULES = project_dir() / "config" / "prometheus" / "rules.yaml"
CONTROLLERS = ("orchestrator", "executor", "notifier")
COOLDOWN_SECONDS = 600
# Panels the scenario leaves empty: no request times out, no reconcile fails or conflicts (a counter
# with labels has no series before its first increment), and no lock is released within the 600 s
# cooldown that keeps a target busy. Every other panel must return data.
NOT_EXERCISED = {
    "Timeouts by phase",
    "Reconcile errors and conflicts by controller",
    "Lock hold time",
    "Time to resolution",
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, with Grafana's variables given concrete values."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


def substitute(expr: str, namespace: str) -> str:
    values = {
        "__rate_interval": "1m",
        "__interval": "5s",
        "__range": "10m",
        "namespace": namespace,
    }
    done = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)
    assert "$" not in done, done
    return done


class Prometheus:
    def __init__(self, directory: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "prometheus.log"
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [{"job_name": "kubernaut", "static_configs": [{"targets": targets}]}],
                }
            )
        )
        self.storage = directory / "tsdb"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            prometheus_tool("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        """The JSON answer of an API GET; an error answer (400, 422) is returned, not raised."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"

        def fetch() -> dict[str, Any]:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return dict(json.loads(response.read()))
            except urllib.error.HTTPError as exc:
                body = exc.read()
                try:
                    return dict(json.loads(body or b"{}")) | {"http_status": exc.code}
                except ValueError:  # 503 "Service Unavailable" in plain text while Prometheus starts
                    return {"status": "unavailable", "http_status": exc.code, "error": body.decode(errors="replace")}
            except (urllib.error.URLError, OSError) as exc:
                return {"status": "unreachable", "error": str(exc)}

        return await asyncio.to_thread(fetch)

    async def query(self, expr: str) -> dict[str, Any]:
        return await self.get("/api/v1/query", query=expr)


@contextlib.asynccontextmanager
async def operators(cluster: ProductionCluster, directory: Path) -> AsyncIterator[dict[str, OperatorProcess]]:
    """One leader-elected `kubernaut run` per controller, as its ServiceAccount, its metrics on loopback."""
    unreachable = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every webhook delivery fails
    extra = {
        "notifier": {"maxAttempts": 2, "backoffBase": "100ms", "backoffMax": "200ms", "webhook": {"url": unreachable}},
        "notifications": {level: ["webhook", "slack"] for level in ("critical", "high", "medium", "low")},
    }
    processes: dict[str, OperatorProcess] = {}
    try:
        for controller in CONTROLLERS:
            config = write_config(
                directory / f"{controller}.yaml",
                audit_db=directory / f"{controller}.db",
                cooldown=f"{COOLDOWN_SECONDS}s",
                extra=extra,
            )
            kubeconfig = await cluster.kubeconfig_for(controller)
            processes[controller] = OperatorProcess(
                controller, kubeconfig, config, controller, directory / f"{controller}.log"
            ).start()
        for process in processes.values():
            await process.wait_ready()
        yield processes
    finally:
        for process in processes.values():
            process.stop_now()


@contextlib.contextmanager
def prometheus(directory: Path, processes: dict[str, OperatorProcess]) -> Iterator[Prometheus]:
    server = Prometheus(directory, [f"127.0.0.1:{p.metrics_port}" for p in processes.values()])
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_every_dashboard_query_is_valid_and_the_exercised_panels_show_data(
    cluster: ProductionCluster, tmp_path: Path
) -> None:
    namespace = await cluster.namespace("obs")
    busy_target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    failing_target = {"kind": "Deployment", "name": "worker", "namespace": namespace}
    async with operators(cluster, tmp_path) as procs:
        with prometheus(tmp_path, procs) as server:

            async def all_targets_up() -> bool:
                up = (await server.query("up")).get("data", {}).get("result") or []
                return len(up) == len(procs) and all(sample["value"][1] == "1" for sample in up)

            await eventually(all_targets_up, timeout=60, interval=0.2, what=f"Prometheus scraping {len(procs)} targets")

            async def phase(name: str, *wanted: str) -> dict[str, Any] | None:
                status = await rr_status(cluster.admin, name, namespace)
                return status if status.get("overallPhase") in wanted else None

            async def create(name: str, target: dict[str, str], bundle: str) -> None:
                body = rr_manifest(name, namespace, target=target, bundle=played(bundle))
                await cluster.admin.create(RemediationRequestResource(body))

            # Succeeds; a second request on the same target arrives while its lock is held and is blocked.
            await create("rr-ok", busy_target, "succeed:1tasks-3s")
            await eventually(lambda: phase("rr-ok", "Executing"), timeout=60, what="rr-ok Executing")
            await create("rr-busy", busy_target, "succeed:1tasks-1s")
            # Fails; its manual-review notification goes to a webhook nobody answers and an unset slack.
            await create("rr-fail", failing_target, "fail:task1of1-1s")

            await eventually(lambda: phase("rr-ok", "Completed"), timeout=60, what="rr-ok Completed")
            blocked = await eventually(lambda: phase("rr-busy", "Blocked"), timeout=60, what="rr-busy Blocked")
            assert blocked["blockReason"] == "ResourceBusy"
            await eventually(lambda: phase("rr-fail", "Failed"), timeout=60, what="rr-fail Failed")

            async def notification_failed() -> bool:
                found = [n async for n in cluster.admin.list(NotificationRequestResource, namespace=namespace)]
                return any((n.to_dict().get("status") or {}).get("phase") == "Failed" for n in found)

            await eventually(notification_failed, timeout=60, interval=0.2, what="a NotificationRequest Failed")

            async def answers() -> tuple[list[str], list[str]]:
                """(invalid queries, exercised panels without data), each with the query and the answer."""
                failures: list[str] = []
                empty: list[str] = []
                queries = dashboard_queries()
                assert queries, f"no panel queries in {DASHBOARD}"
                for title, expr in queries:
                    query = substitute(expr, namespace)
                    answer = await server.query(query)
                    if answer.get("status") != "success":
                        failures.append(f"{title}: {query}\n  -> {json.dumps(answer)}")
                    elif title not in NOT_EXERCISED and not answer["data"]["result"]:
                        empty.append(f"{title}: {query}\n  -> {json.dumps(answer)}")
                return failures, empty

            failures, _ = await answers()
            assert not failures, "invalid dashboard queries:\n" + "\n".join(failures)

            # A rate needs two samples of a series: the last ones appear within a few scrapes.
            async def every_panel_shows_data() -> bool:
                return not (await answers())[1]

            try:
                await eventually(every_panel_shows_data, timeout=20, interval=0.5, what="data in every panel")
            except AssertionError:
                empty = (await answers())[1]
                raise AssertionError("panels without data after the scenario:\n" + "\n".join(empty)) from None

            # The namespace variable offers the scenario's namespace.
            values = await server.get(
                "/api/v1/label/namespace/values",
                **{"match[]": "kubernaut_remediationorchestrator_phase_transitions_total"},
            )
            assert namespace in values.get("data", []), values

            # Prometheus loaded every alert rule and evaluates it without error; every Lease has a leader.
            shipped = sorted(
                rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
            )

            async def evaluated() -> dict[str, dict[str, Any]] | None:
                groups = (await server.get("/api/v1/rules", type="alert")).get("data", {}).get("groups") or []
                loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
                done = sorted(loaded) == shipped and all(r.get("evaluationTime", 0) > 0 for r in loaded.values())
                return loaded if done else None

            loaded = await eventually(evaluated, timeout=10, interval=0.2, what=f"Prometheus evaluating {shipped}")
            assert all(rule["health"] == "ok" for rule in loaded.values()), json.dumps(loaded, indent=1)
            assert loaded["KubernautNoLeader"]["state"] == "inactive", json.dumps(loaded["KubernautNoLeader"], indent=1)
