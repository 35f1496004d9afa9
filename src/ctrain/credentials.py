"""Each environment's MLflow credentials, sent to that environment's server and to no other.

MLflow knows one user per process (``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``) and sends it to
every server the process talks to. A worker that pulls a version from another environment talks
to two servers, as two users: its own environment's and the one the source granted it (read on
the model, nothing it could move). Each environment's user is read from the process's
environment, never from the project file::

    MLFLOW_<ENV>_TRACKING_USERNAME         e.g. MLFLOW_DEV_TRACKING_USERNAME
    MLFLOW_<ENV>_TRACKING_PASSWORD         or
    MLFLOW_<ENV>_TRACKING_PASSWORD_FILE    a mounted secret holding it

and attached by MLflow's own request-auth plugin hook (entry point
``mlflow.request_auth_provider``, name ``ctrain-environments``, chosen with
``MLFLOW_TRACKING_AUTH``), which sees each request's URL: a request to the server of an
environment with a user of its own carries that user, a request to any other server carries
what MLflow would have sent. Artifact downloads and uploads go through the same hook.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ctrain.settings import Settings

PROVIDER = "ctrain-environments"
_routes: dict[str, str] = {}  # server origin -> environment name, from the settings seen


@dataclass(frozen=True)
class Login:
    environment: str
    username: str
    password: str = ""


def variable(environment: str, what: str) -> str:
    """The name of ``environment``'s credential variable: ``MLFLOW_DEV_TRACKING_USERNAME``."""
    return f"MLFLOW_{environment.upper()}_TRACKING_{what}"


def login_of(environment: str, env: dict[str, str] | None = None) -> Login | None:
    """``environment``'s MLflow user from the process's environment, or None when none is set.

    Raises:
        ValueError: a user without a password, or a password file that cannot be read; the
            message names the variable.
    """
    env = os.environ if env is None else env
    user = env.get(variable(environment, "USERNAME"))
    if not user:
        return None
    password = env.get(variable(environment, "PASSWORD"))
    path_var = variable(environment, "PASSWORD_FILE")
    if not password and env.get(path_var):
        try:
            password = Path(env[path_var]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{path_var}: cannot read {env[path_var]}: {exc.strerror}") from None
    if not password:
        raise ValueError(
            f"{variable(environment, 'USERNAME')} is set but neither "
            f"{variable(environment, 'PASSWORD')} nor {path_var} is"
        )
    return Login(environment, user, password)


def _origin(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def route(settings: Settings) -> list[str]:
    """Send each environment's user (if one is set) to its server from now on, in this process;
    the environments that have one. What an earlier call said of these environments is
    replaced (a server that moved is not sent their user any more).

    Raises:
        ValueError: two environments with users of their own share one server, or a user's
            password cannot be read.
    """
    mine: dict[str, str] = {}
    for name, env in settings.environments.items():
        origin = _origin(env.tracking_uri)
        if origin is None or login_of(name) is None:
            continue
        if origin in mine:
            raise ValueError(
                f"environments {mine[origin]} and {name} both have an MLflow user and share the "
                f"server {origin}: each environment's user must reach its own server"
            )
        mine[origin] = name
    for origin, name in list(_routes.items()):
        if name in settings.environments:
            del _routes[origin]
    _routes.update(mine)
    if mine:
        # MLflow asks the hook named here on every request; one set by the deployment wins.
        os.environ.setdefault("MLFLOW_TRACKING_AUTH", PROVIDER)
    return list(mine.values())


def login_for(url: str) -> Login | None:
    """The user a request to ``url`` carries, if its server is an environment's with one."""
    name = _routes.get(_origin(url) or "")
    return login_of(name) if name else None


def refused(exc: BaseException) -> str | None:
    """What an MLflow server's refusal of this process's user (HTTP 401 or 403) means, in one
    line; None for any other error."""
    found = re.search(r"error code (401|403)\b", str(exc))
    if found is None:
        return None
    if found.group(1) == "401":
        return "refused (HTTP 401): the server knows no such user or password as this process sends"
    return "refused (HTTP 403): this process's user has no permission there for that"


class EnvironmentAuth:
    """A ``requests`` auth: the environment's user for its server, else the request as it is."""

    def __call__(self, request):
        login = login_for(request.url)
        if login is not None:
            token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
            request.headers["Authorization"] = f"Basic {token}"
        return request


def __getattr__(name: str):
    """``EnvironmentAuthProvider``, MLflow's request-auth plugin (``MLFLOW_TRACKING_AUTH=
    ctrain-environments``), made when MLflow loads its entry point: it subclasses MLflow's
    base, and importing this module must not import MLflow (1.3 s)."""
    if name != "EnvironmentAuthProvider":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

    class EnvironmentAuthProvider(RequestAuthProvider):
        def get_name(self) -> str:
            return PROVIDER

        def get_auth(self):
            return EnvironmentAuth()

    globals()[name] = EnvironmentAuthProvider
    return EnvironmentAuthProvider
