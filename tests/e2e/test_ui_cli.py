"""`kubernaut ui` as a user runs it: a process serving the pages on loopback until Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from lightkube import AsyncClient

from tests.integration.harness import eventually
from tests.integration.orchestrator_support import create_rr, set_rr_status
from tests.integration.rr import rr_manifest


@pytest.fixture
def ui_process(kubeconfig: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubernaut", "ui", "--kubeconfig", str(kubeconfig), "--port", "0"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "KUBECONFIG": ""},
        )
        try:
            yield proc, log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()  # the test has failed already; leave no process behind for the next tests
                    proc.wait(10)


async def test_ui_serves_the_list_until_ctrl_c(
    kube: AsyncClient, namespace: str, ui_process: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, log = ui_process
    await create_rr(kube, rr_manifest("rr-shown", namespace, target={"kind": "Node", "name": "node-1"}))
    await set_rr_status(kube, "rr-shown", namespace, {"overallPhase": "Failed", "skipReason": "ExhaustedRetries"})

    async def announced() -> str | None:
        assert proc.poll() is None, log.read_text()
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)/", log.read_text())
        return found.group(1) if found else None

    base = await eventually(announced, timeout=30, what=f"the URL in {log}")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/") as response:
            assert response.status == 200
            page = await response.text()
        assert f'data-name="{namespace}/rr-shown"' in page
        assert "ExhaustedRetries" in page
        async with session.get(f"{base}/remediations/{namespace}/rr-shown") as response:
            assert response.status == 200
            assert "No audit store configured" in await response.text()
        async with session.get(f"{base}/nowhere") as response:
            assert response.status == 404
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"kubernaut ui still running 20 s after SIGINT:\n{log.read_text()}") from None
    assert code == 0, log.read_text()
