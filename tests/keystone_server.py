"""A real Keystone for the tests: ``keystone`` from PyPI on SQLite, served by uWSGI on 127.0.0.1.

Plain module like :mod:`tests.servers` (no pytest in here)::

    with KeystoneServer() as keystone:
        print(keystone.auth_url, keystone.token(keystone.client_user))

Prepared once (``_prepare``): ``keystone.conf``, then ``keystone-manage db_sync`` beside
``fernet_setup`` and ``credential_setup`` (three processes at once), then ``bootstrap`` (the
admin user, the identity endpoint). Served by ``uwsgi --module keystone.wsgi.api:application``:
Keystone parses ``sys.argv`` as its own options, so a server whose command line is the app's
(gunicorn) cannot host it; uWSGI's is not seen by the app. Ready when ``GET /v3`` answers 200.
After the first start: a ``service`` project with the ``zaqar`` service user (role ``service``,
what keystonemiddleware's token validation needs) and an ``e2e`` project with a member user
for the client.

Passwords are hashed with bcrypt's fewest rounds (``password_hash_rounds = 4``): a password
authentication takes ~10 ms instead of ~400 ms.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zaqar_otel.demo.process import (
    LOCALHOST,
    Missing,
    ServerProcess,
    StartFailed,
    http_get,
    pick_port,
)
from zaqar_otel.demo.stack import render_ini

BIN = Path(sys.executable).parent
KEYSTONE_HINT = "install the test extra: pip install -e '.[all,test]' (keystone, uWSGI)"
ADMIN_PASSWORD = "admin-secret"
REGION = "RegionOne"


@dataclass(frozen=True)
class Account:
    """A Keystone user with a role on a project (domain ``default``)."""

    username: str
    password: str
    project: str
    role: str

    def auth(self, auth_url: str) -> dict[str, str]:
        """keystoneauth1 ``v3.Password`` arguments."""
        return {
            "auth_url": auth_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project,
            "user_domain_id": "default",
            "project_domain_id": "default",
        }


ADMIN = Account("admin", ADMIN_PASSWORD, "admin", "admin")
SERVICE_USER = Account("zaqar", "zaqar-service-secret", "service", "service")
CLIENT_USER = Account("e2e-user", "e2e-user-secret", "e2e", "member")


def render_keystone_conf(
    tmpdir: Path, profiler: Mapping[str, str] | None = None, debug: bool = False
) -> str:
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {"debug": str(debug).lower(), "use_stderr": "true"},
        "database": {"connection": f"sqlite:///{tmpdir / 'keystone.db'}"},
        "fernet_tokens": {"key_repository": str(tmpdir / "fernet-keys")},
        "fernet_receipts": {"key_repository": str(tmpdir / "fernet-keys")},
        "credential": {"key_repository": str(tmpdir / "credential-keys")},
        "identity": {"password_hash_rounds": "4"},
        "cache": {"enabled": "true", "backend": "dogpile.cache.memory"},
        "token": {"provider": "fernet", "expiration": "3600", "caching": "false"},
        "profiler": dict(profiler or {"enabled": "false"}),
    }
    return render_ini(sections)


class KeystoneServer(ServerProcess):
    """Keystone (identity API v3, fernet tokens, SQLite) under uWSGI on 127.0.0.1:<port>.

    ``profiler`` is its ``[profiler]`` section (e.g. ``connection_string = otel://``) and
    ``env`` extra environment (``OTEL_EXPORTER_OTLP_ENDPOINT``...) for the server processes.
    """

    name = "keystone"

    def __init__(
        self,
        *,
        profiler: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        processes: int = 1,
        threads: int = 4,
        startup_timeout: float = 120.0,
    ) -> None:
        if importlib.util.find_spec("keystone") is None:
            raise Missing(f"the keystone package is not installed; {KEYSTONE_HINT}")
        for tool in ("keystone-manage", "uwsgi"):
            if not (BIN / tool).exists():
                raise Missing(f"{BIN / tool} not found; {KEYSTONE_HINT}")
        super().__init__(startup_timeout=startup_timeout)
        self.processes = processes
        self.threads = threads
        self.profiler = dict(profiler or {})
        self.extra_env = dict(env or {})
        self.conf_path = self.workdir / "keystone.conf"
        self._accounts_made = False

    # -- endpoints
    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def auth_url(self) -> str:
        """The identity v3 endpoint (``OS_AUTH_URL``)."""
        return f"{self.url}/v3"

    def _new_ports(self) -> bool:
        if self._ever_started:
            return False
        self.port = pick_port()
        self._prepared = False  # the catalog names the port: bootstrap again
        return True

    # -- preparation
    def _manage(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        log.write(f"\n--- keystone-manage {' '.join(args)}\n".encode())
        log.flush()
        return subprocess.Popen(
            [str(BIN / "keystone-manage"), "--config-file", str(self.conf_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self._clean_env(),
        )

    def _wait_all(self, procs: list[subprocess.Popen[bytes]], step: str) -> None:
        for proc in procs:
            try:
                code = proc.wait(self.startup_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                raise StartFailed(
                    f"keystone-manage {step} failed with code {code}.\n"
                    f"log {self.log_path}:\n{self.log()}"
                )

    def _prepare(self) -> None:
        (self.workdir / "keystone.db").unlink(missing_ok=True)
        for keys in ("fernet-keys", "credential-keys"):
            shutil.rmtree(self.workdir / keys, ignore_errors=True)
        self.conf_path.write_text(render_keystone_conf(self.workdir, self.profiler))
        owner = ("--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid()))
        self._wait_all(
            [
                self._manage("db_sync"),
                self._manage("fernet_setup", *owner),
                self._manage("credential_setup", *owner),
            ],
            "db_sync/fernet_setup/credential_setup",
        )
        bootstrap = self._manage(
            "bootstrap",
            "--bootstrap-password", ADMIN_PASSWORD,
            "--bootstrap-admin-url", self.auth_url,
            "--bootstrap-public-url", self.auth_url,
            "--bootstrap-internal-url", self.auth_url,
            "--bootstrap-region-id", REGION,
        )  # fmt: skip
        self._wait_all([bootstrap], "bootstrap")

    # -- the server
    def _clean_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OS_"))}
        env["OS_KEYSTONE_CONFIG_FILES"] = str(self.conf_path)
        return env

    def _env(self) -> dict[str, str]:
        env = self._clean_env()
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        env.update(self.extra_env)
        return env

    def _command(self) -> list[str]:
        return [
            str(BIN / "uwsgi"),
            "--master",
            "--die-on-term",
            "--need-app",
            "--lazy-apps",  # the app (and its exporter thread) is built in each worker
            "--http-socket", f"{LOCALHOST}:{self.port}",
            # --http-socket closes each connection after the response: say so, or a client
            # reusing the connection races the close (a "connection reset" now and then)
            "--add-header", "Connection: close",
            "--module", "keystone.wsgi.api:application",
            "--processes", str(self.processes),
            "--threads", str(self.threads),
            "--disable-logging",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        # every worker has built the app (--lazy-apps: a request may reach any of them)
        if self.run_log().count("WSGI app 0 (mountpoint='') ready") < self.processes:
            return False
        status, _ = http_get(f"{self.auth_url}", timeout=2)
        return status == 200

    def _after_ready(self) -> None:
        if not self._accounts_made:
            self._make_accounts()
            self._accounts_made = True

    # -- the identity API (as admin)
    def session(self, account: Account = ADMIN) -> Any:
        """A keystoneauth1 Session authenticated as ``account``."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        return session.Session(auth=v3.Password(**account.auth(self.auth_url)))

    def create_account(self, account: Account, sess: Any = None) -> None:
        """Create ``account``'s project and user and give it its role (an existing role)."""
        sess = sess or self.session()
        roles = {r["name"]: r["id"] for r in sess.get(f"{self.auth_url}/roles").json()["roles"]}
        project = {"name": account.project, "domain_id": "default"}
        answer = sess.post(f"{self.auth_url}/projects", json={"project": project}).json()
        project_id = answer["project"]["id"]
        user = {"name": account.username, "password": account.password, "domain_id": "default"}
        user_id = sess.post(f"{self.auth_url}/users", json={"user": user}).json()["user"]["id"]
        role_id = roles[account.role]
        sess.put(f"{self.auth_url}/projects/{project_id}/users/{user_id}/roles/{role_id}")

    def _make_accounts(self) -> None:
        sess = self.session()
        for account in (SERVICE_USER, CLIENT_USER):
            self.create_account(account, sess)

    def set_endpoint(self, service_type: str, url: str, name: str | None = None) -> None:
        """Make ``url`` the one public/internal/admin endpoint of ``service_type``."""
        sess = self.session()
        services = sess.get(f"{self.auth_url}/services", params={"type": service_type}).json()
        if services["services"]:
            service = services["services"][0]["id"]
        else:
            body = {"type": service_type, "name": name or service_type, "enabled": True}
            service = sess.post(f"{self.auth_url}/services", json={"service": body}).json()
            service = service["service"]["id"]
        old = sess.get(f"{self.auth_url}/endpoints", params={"service_id": service}).json()
        for endpoint in old["endpoints"]:
            sess.delete(f"{self.auth_url}/endpoints/{endpoint['id']}")
        for interface in ("public", "internal", "admin"):
            body = {"service_id": service, "interface": interface, "url": url, "region_id": REGION}
            sess.post(f"{self.auth_url}/endpoints", json={"endpoint": body})

    def token(self, account: Account = CLIENT_USER) -> str:
        """A fresh project-scoped token of ``account``."""
        return str(self.session(account).get_token())

    # -- what clients and services are configured with
    def authtoken_conf(self, account: Account = SERVICE_USER) -> dict[str, str]:
        """``[keystone_authtoken]`` of a service protected by keystonemiddleware."""
        return {
            "www_authenticate_uri": self.auth_url,
            "auth_url": self.auth_url,
            "auth_type": "password",
            "username": account.username,
            "password": account.password,
            "project_name": account.project,
            "user_domain_id": "default",
            "project_domain_id": "default",
            "region_name": REGION,
        }

    def os_env(self, account: Account = CLIENT_USER) -> dict[str, str]:
        """The ``OS_*`` variables of an ``openrc`` for ``account``."""
        return {
            "OS_AUTH_URL": self.auth_url,
            "OS_AUTH_TYPE": "password",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_USERNAME": account.username,
            "OS_PASSWORD": account.password,
            "OS_PROJECT_NAME": account.project,
            "OS_USER_DOMAIN_ID": "default",
            "OS_PROJECT_DOMAIN_ID": "default",
            "OS_REGION_NAME": REGION,
            "OS_INTERFACE": "public",
        }

    def clouds_yaml(self, cloud: str, account: Account = CLIENT_USER) -> str:
        """A ``clouds.yaml`` with one cloud (JSON is YAML)."""
        import json

        auth = account.auth(self.auth_url)
        entry = {"auth": auth, "region_name": REGION, "identity_api_version": 3}
        return json.dumps({"clouds": {cloud: entry}}, indent=2) + "\n"
