"""The compose stack's console, signed in through the compose routing, without a Docker engine.

Every container of ``docker-compose.yml`` that runs Tally code runs here as a process, with the environment the
compose file gives it (plus its Dockerfile's ENV and CMD); compose hostnames (``kafka``, ``postgres``, ``ingest``,
``gateway``, ...) map to loopback ports, the database and broker to the test session's. In front, a real nginx with
``deploy/nginx.conf`` (upstream addresses and listen port rewritten to those ports). A person signs in and opens the
queues, traces and dashboards pages through it: each is a page that calls the services' APIs from the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tally_cli.routes import SERVICES
from tally_shared import infra

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def _nginx() -> str | None:
    return os.environ.get("TALLY_NGINX") or shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", one, value)


def dockerfile(service: str) -> tuple[dict[str, str], str]:
    """The final stage's TALLY_* ENV and its ``sh -c`` command line."""
    text = (ROOT / "deploy" / f"{service}.Dockerfile").read_text()
    env = dict(re.findall(r"\b(TALLY_\w+)=(\S+)", text))
    cmd = json.loads(re.findall(r"^CMD\s+(\[.*\])\s*$", text, flags=re.M)[-1])
    assert cmd[:2] == ["sh", "-c"], cmd
    return env, cmd[2]


class Topology:
    """Compose hostnames and ports -> loopback ports; the env of each container, rewritten to them."""

    def __init__(self, compose: dict, database_url: str, bootstrap: str) -> None:
        self.compose = compose
        self.database_url = database_url
        self.bootstrap = bootstrap
        self.variables = {"TALLY_SECRET_KEY": secrets.token_urlsafe(32)}
        self.addresses: dict[str, int] = {}  # "ingest:8101" -> local port
        for service in SERVICES:
            env, _ = dockerfile(service)
            self.addresses[f"{service}:{next(v for k, v in env.items() if k.endswith('_PORT'))}"] = infra.free_port()
        self.addresses["health:3000"] = infra.free_port()
        self.addresses["gateway:3000"] = infra.free_port()

    def local(self, hostport: str) -> str:
        return f"127.0.0.1:{self.addresses[hostport]}"

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        raw = {k: interpolate(str(v), self.variables)
               for k, v in (self.compose["services"][name].get("environment") or {}).items()}
        env = {**(extra or {}), **raw}
        if "DATABASE_URL" in env:
            assert urlsplit(env["DATABASE_URL"]).hostname == "postgres", env["DATABASE_URL"]
            env["DATABASE_URL"] = self.database_url
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", env["KAFKA_BOOTSTRAP_SERVERS"]
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        for key, value in env.items():
            for hostport in self.addresses:
                value = value.replace(f"//{hostport}", f"//{self.local(hostport)}")
            env[key] = value
        # Not the container's world: loopback only, and the test's interpreter.
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONUNBUFFERED": "1", **env}


def _command(shell: str) -> list[str]:
    return ["sh", "-c", re.sub(r"(^|&& |exec )python\b", lambda m: m.group(1) + shlex.quote(sys.executable), shell)]


@pytest.fixture(scope="module")
def compose_stack(make_database: Callable[[], str], kafka_bootstrap: str, tmp_path_factory) -> Iterator[
        tuple[str, Topology]]:
    binary = _nginx()
    if not binary:
        pytest.skip("no nginx binary (python3 dev.py test installs Debian's nginx where apt is available)")
    compose = yaml.safe_load(COMPOSE.read_text())
    topo = Topology(compose, make_database(), kafka_bootstrap)
    tmp = tmp_path_factory.mktemp("compose")
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(tmp / f"{name}.log", "wb")
        procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def logs() -> str:
        return "\n".join(f"--- {name}\n{(tmp / f'{name}.log').read_text(errors='replace')[-2000:]}" for name in procs)

    try:
        init_cmd = compose["services"]["init"]["command"]
        assert init_cmd[0] == "python"
        start("init", [sys.executable, *init_cmd[1:]], topo.env("init"))
        assert procs["init"].wait(180) == 0, logs()
        group = uuid.uuid4().hex[:8]
        for service in SERVICES:
            image_env, shell = dockerfile(service)
            prefix = next(k for k in image_env if k.endswith("_PORT")).removesuffix("PORT")
            port = topo.addresses[f"{service}:{image_env[prefix + 'PORT']}"]
            start(service, _command(shell), topo.env(service, {
                **image_env, prefix + "HOST": "127.0.0.1", prefix + "PORT": str(port),
                # The session's broker is shared by other tests: consumer groups of this stack's own.
                prefix + "GROUP_ID": f"{service}-compose-{group}",
                # ingest's OTLP/gRPC port, published by compose: here a free one.
                **({prefix + "GRPC_PORT": str(infra.free_port())} if service == "ingest" else {})}))
        health = compose["services"]["health"]
        start("health", [sys.executable, *health["command"][1:]],
              {**topo.env("health"), "TALLY_GATEWAY_HOST": "127.0.0.1",
               "TALLY_GATEWAY_PORT": str(topo.addresses["health:3000"])})

        conf = re.sub(r"^user\s+\S+;", "", NGINX_CONF.read_text(), flags=re.M)
        conf = re.sub(r"\blisten\s+3000;", f"listen {topo.local('gateway:3000')};", conf)
        for hostport in topo.addresses:
            conf = re.sub(rf"(\bset\s+\$\w+\s+){re.escape(hostport)};", rf"\g<1>{topo.local(hostport)};", conf)
        assert not re.search(r"\bset\s+\$\w+\s+[a-z-]+:\d+;", conf), "an nginx upstream was left unmapped"
        temp = " ".join(f"{kind}_temp_path {tmp}/ngx-{kind};" for kind in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = conf.replace("http {", "http {\n    " + temp, 1)
        (tmp / "nginx.conf").write_text(conf)
        start("gateway", [binary, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", "stderr",
                          "-g", f"daemon off; pid {tmp}/nginx.pid;"], dict(os.environ))

        base = f"http://{topo.local('gateway:3000')}"
        deadline = time.monotonic() + 150
        status = 0
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                for name, proc in procs.items():
                    if name != "init" and proc.poll() is not None:
                        pytest.fail(f"{name} exited with {proc.returncode}\n{logs()}")
                with contextlib.suppress(httpx.HTTPError):
                    status = client.get(base + "/api/public/health").status_code
                if status == 200:
                    break
                time.sleep(0.5)
        assert status == 200, logs()
        yield base, topo
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(5)


async def _member(database_url: str) -> tuple[str, str, str, tuple[str, str]]:
    from tally_shared.db import make_engine
    from tally_shared.identity.store import IdentityStore

    engine = make_engine(database_url, pool_size=1)
    try:
        store = IdentityStore(engine)
        project = f"compose-{uuid.uuid4().hex[:8]}"
        await store.create_project(project, project)
        email, password = f"lead-{project}@tally.test", "a long enough password"
        user = await store.create_user(email, password, "Lead")
        await store.add_member(user.id, project, "admin")
        keys = await store.create_api_key(project)
        return project, email, password, keys
    finally:
        await engine.dispose()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def test_the_compose_console_points_at_the_gateway() -> None:
    env = yaml.safe_load(COMPOSE.read_text())["services"]["console"]["environment"]
    assert env["TALLY_CONSOLE_API_URL"] == "http://gateway:3000"


def test_a_person_signs_in_and_opens_pages_through_the_compose_routing(compose_stack) -> None:
    base, topo = compose_stack
    _, email, password, keys = asyncio.run(_member(topo.database_url))
    trace_id, now = uuid.uuid4().hex, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as api:
        r = api.post("/api/public/ingestion", auth=keys, json={"batch": [{
            "id": uuid.uuid4().hex, "timestamp": now, "type": "trace-create",
            "body": {"id": trace_id, "name": "through-compose-routing", "timestamp": now}}]})
        assert r.status_code == 207 and r.json()["errors"] == [], r.text

    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as browser:
        login = browser.get("/login")
        assert login.status_code == 200
        r = browser.post("/login", data={"email": email, "password": password, "csrf": _csrf(login.text),
                                         "next": "/"})
        assert r.status_code == 303, r.text[:500]
        for path, marker in (("/queues", "Review queues"), ("/dashboards", "Score dashboards")):
            page = browser.get(path)
            assert page.status_code == 200, (path, page.status_code, page.text[:1000])
            assert marker in page.text
        # The trace list is read from projections through the gateway; the trace shows once it is projected.
        deadline = time.monotonic() + 60
        while "through-compose-routing" not in (page := browser.get("/traces")).text and time.monotonic() < deadline:
            assert page.status_code == 200, page.text[:1000]
            time.sleep(0.5)
        assert page.status_code == 200 and "through-compose-routing" in page.text
        trace = browser.get(f"/traces/{trace_id}")
        assert trace.status_code == 200 and "through-compose-routing" in trace.text
