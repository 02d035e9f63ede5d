"""The monitoring that ships in deploy/: Prometheus alert rules and the Grafana dashboard.

Checked with Prometheus' own promtool (``check rules``, and ``test rules`` on the unit tests in
tests/prometheus/), and against what a real gateway exports: every metric and label a rule or
panel asks for is in a real ``/metrics`` scrape.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import ROOT, Gateway
from tests.fakes.fake_ollama import FakeOllama
from tests.test_metrics_e2e import ALICE, BOB, two_keys

RULES = ROOT / "deploy/prometheus/qwengw-rules.yml"
RULE_TESTS = sorted((ROOT / "tests/prometheus").glob("*.test.yml"))
DASHBOARD = ROOT / "deploy/grafana/qwengw-dashboard.json"
OPERATIONS = ROOT / "docs/operations.md"
# Series that come from Prometheus itself or from the blackbox exporter, not from the gateway.
NOT_FROM_THE_GATEWAY = {"up", "probe_ssl_earliest_cert_expiry"}
# What Grafana puts in place of its variables, for promtool.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "$job": ".*",
    "$model": ".*",
    "$key_id": ".*",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package (scripts/test.sh does)"
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)


# ----------------------------------------------------------------------------- PromQL, read


def _strip(expr: str) -> str:
    """The expression without label matchers, ranges, offsets, strings and grouping clauses."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)


KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, aggregations or keywords)."""
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", _strip(expr)):
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def selector_labels(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names it matches on) for each ``metric{...}`` selector."""
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        yield m.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2)))


def test_promql_reader() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{job=~"x", le!="1"}[5m] '
        'offset 7d))) > 1.3 * on (job) group_left b and ignoring(x) c_total{y="or d"} - time()'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total"}
    assert dict(selector_labels(expr)) == {"a_bucket": {"job", "le"}, "c_total": {"y"}}


# ----------------------------------------------------------------------------- a real scrape


@pytest.fixture(scope="module")
def scrape(
    fake_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, set[str]]]:
    """Sample name → label names, from a gateway that has seen every kind of traffic."""
    fake = fake_ollama
    fake.reset()
    gw = Gateway(two_keys(fake.url), tmp_path_factory.mktemp("gw")).start()
    try:
        url = gw.url + "/v1/chat/completions"
        body = {"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]}
        alice = {"Authorization": f"Bearer {ALICE}"}
        assert requests.post(url, json=body, headers=alice, timeout=10).ok
        assert requests.post(url, json={**body, "stream": True}, headers=alice, timeout=10).ok
        for _ in range(3):  # the third is refused: 2 a minute
            requests.post(url, json=body, headers={"Authorization": f"Bearer {BOB}"}, timeout=10)
        assert requests.post(url, json=body, headers={"X-Api-Key": "no"}, timeout=10).status_code
        fake.behave(chunk_delay=0.1, repeat=10)
        with requests.post(
            url, json={**body, "stream": True}, headers=alice, stream=True, timeout=10
        ) as held:
            lines = held.iter_lines()
            next(lines)
        deadline = time.monotonic() + 5
        while "qwengw_cancelled_requests_total{" not in (text := _get(gw)):
            assert time.monotonic() < deadline, "the cancelled stream was not counted"
            time.sleep(0.05)
        samples: dict[str, set[str]] = {}
        for line in text.splitlines():
            m = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})? ", line)
            if m:
                labels = set(re.findall(r'(\w+)="', m.group(2) or ""))
                samples.setdefault(m.group(1), set()).update(labels)
        yield samples
    finally:
        gw.stop()
        fake.reset()


def _get(gw: Gateway) -> str:
    return requests.get(gw.url + "/metrics", timeout=5).text


def check_against_scrape(exprs: dict[str, str], samples: dict[str, set[str]]) -> None:
    for where, expr in exprs.items():
        for name in metric_names(expr) - NOT_FROM_THE_GATEWAY:
            assert name in samples, f"{where}: {name} is not exported by the gateway"
        for name, labels in selector_labels(expr):
            if name in NOT_FROM_THE_GATEWAY:
                continue
            missing = labels - samples.get(name, set()) - {"job", "instance"}
            assert not missing, f"{where}: {name} has no label {missing}"


def promtool_check(promtool: str, exprs: dict[str, str], tmp_path: Path) -> None:
    """Every expression through ``promtool check rules``, as recording rules."""
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs.values())]
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    res = run(promtool, "check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check(promtool: str) -> None:
    res = run(promtool, "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


def test_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    res = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names == fired, f"no firing test for {names - fired}"
    assert names == silent, f"no silent test for {names - silent}"


def test_alerts_have_a_runbook_in_operations_md() -> None:
    text = OPERATIONS.read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", text), re.M)
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning")
        link = rule["annotations"]["runbook"]
        assert link.startswith("docs/operations.md#") and link.split("#")[1] in anchors, link


@pytest.mark.integration
def test_rules_ask_only_for_what_the_gateway_exports(scrape: dict[str, set[str]]) -> None:
    check_against_scrape({r["alert"]: r["expr"] for r in alert_rules()}, scrape)


# ----------------------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_exprs(dash: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression (panels and variable queries), Grafana's variables filled in."""
    exprs = {}
    for p in panels(dash):
        for t in p.get("targets", []):
            exprs[f"{p['title']} / {t['refId']}"] = t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["definition"])
            assert m, v["definition"]
            exprs[f"variable {v['name']}"] = m.group(1)
    for key, expr in exprs.items():
        for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{key}: unknown variable in {expr}"
        exprs[key] = expr
    return exprs


def test_dashboard_is_importable_as_is() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 39 and dash["uid"] and dash["title"]
    assert dash["id"] is None  # Grafana assigns its own on import
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "model", "key_id"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        if p["type"] not in ("row", "text"):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


def test_dashboard_answers_the_daily_questions() -> None:
    dash = dashboard()
    text = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels(dash)}

    def panel(words: str) -> str:
        found = [exprs for title, exprs in text.items() if words.lower() in title.lower()]
        assert found, f"no panel titled like {words!r} in {sorted(text)}"
        return found[0]

    assert "by (status)" in panel("requests per second by status")
    assert 'status=~"5.."' in panel("error ratio")
    assert "401|429" in panel("401 and 429 per key id") and "key_id" in panel("401 and 429")
    ttft = panel("time to first token")
    assert "0.5" in ttft and "0.95" in ttft and "offset 7d" in ttft and "1.3 *" in ttft
    assert "by (model" in panel("tokens per second per model")
    assert "by (key_id" in panel("tokens per second per key")
    assert "qwengw_limit_max_concurrent" in panel("in flight against the concurrency limit")
    assert "by (le, upstream)" in panel("upstream latency per host")
    assert "qwengw_circuit_state" in panel("circuit state")
    assert "qwengw_cancelled_requests_total" in panel("cancellations")
    assert dash["templating"]["list"][0]["name"] == "datasource"


def test_dashboard_queries_pass_promtool(promtool: str, tmp_path: Path) -> None:
    promtool_check(promtool, dashboard_exprs(dashboard()), tmp_path)


@pytest.mark.integration
def test_dashboard_asks_only_for_what_the_gateway_exports(scrape: dict[str, set[str]]) -> None:
    exprs = dashboard_exprs(dashboard())
    assert not any(metric_names(e) & NOT_FROM_THE_GATEWAY for e in exprs.values())
    check_against_scrape(exprs, scrape)
