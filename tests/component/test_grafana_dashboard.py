"""The Grafana dashboard imports as is: one Prometheus data source input used by every panel and query,
a current schema, unique panel ids. Its queries run against a real Prometheus in
tests/integration/test_prometheus_dashboard.py."""

import json

from kubernaut.paths import project_dir

DASHBOARD = json.loads((project_dir() / "config" / "grafana" / "kubernaut.json").read_text())
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def test_the_data_source_is_an_import_input() -> None:
    assert [(i["name"], i["type"], i["pluginId"]) for i in DASHBOARD["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert DASHBOARD["schemaVersion"] >= 39
    assert DASHBOARD["id"] is None  # Grafana assigns it on import


def test_every_panel_and_query_uses_the_input() -> None:
    panels = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"], panel["title"]
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert variables["namespace"]["datasource"] == DATASOURCE
