"""Who is using the web UI, and what each person may do in each project.

An action in the UI (promote, approve, abort, ...) is sent to Temporal under
the name of the person the UI *authenticated*, never a name the browser
declares: the forms carry no user field, and the name comes from one of three
authenticators, chosen by ``FREIGHTLINE_UI_AUTH``:

- ``users`` (the default): people sign in with a password checked against the
  users file (``FREIGHTLINE_UI_USERS_FILE``; hashes are scrypt, made by
  ``freightline ui-password``); the UI then holds their name in a session
  cookie signed with ``FREIGHTLINE_UI_SECRET`` (HMAC-SHA256), and their groups
  are read from the file on each request.
- ``oidc``: people sign in at an OpenID Connect issuer (authorization code
  with PKCE; ``freightline.app.ui_oidc``); the user and groups come from the
  ID token's claims, the session is a signed cookie as above.
- ``proxy``: an authenticating proxy in front of the UI (oauth2-proxy, a
  company SSO gateway doing OIDC) names the user and groups in headers
  (``X-Forwarded-User``, ``X-Forwarded-Groups``), believed only from the peer
  addresses in ``FREIGHTLINE_UI_TRUSTED_PROXIES``; a request from anywhere
  else is not signed in, whatever headers it carries.

Roles, per project, from the users file's ``roles``: ``viewer`` (read),
``promoter`` (promote, refresh, re-verify, abort), ``approver`` (and approve or
reject promotions, approve Freight for a Stage), ``admin`` (everything); each
includes the ones before it. A role is given to users by name, to groups as
``group:NAME``, to an OIDC claim as ``claim:NAME=VALUE``, or to everyone
signed in as ``*``; the project ``*`` applies to every project (and the
file's ``oidc`` section, Kargo's ``admins``/``viewers`` claim mappings, grants
there). Every POST is checked server-side against them, and against a
CSRF token bound to the person's session (docs/ui.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from starlette.requests import Request

from freightline.contracts.approvals import public_key_of
from freightline.errors import ConfigError
from freightline.settings import UI_SIGNING_KEY_ENV, UI_USERS_FILE_ENV, UiSettings

if TYPE_CHECKING:
    from freightline.app.ui_oidc import OidcAuthenticator

__all__ = [
    "Access",
    "ProxyAuthenticator",
    "Role",
    "Signer",
    "User",
    "UserDirectory",
    "UsersAuthenticator",
    "access_for",
    "hash_password",
    "verify_password",
]

SESSION_COOKIE = "freightline_session"
SESSION_SECONDS = 12 * 3600
"""How long a sign-in lasts."""
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1


class Role(IntEnum):
    """What a person may do in a project; each role includes the ones below it."""

    NONE = 0
    VIEWER = 1
    PROMOTER = 2
    APPROVER = 3
    ADMIN = 4


@dataclass(frozen=True)
class User:
    """A person as the UI authenticated them."""

    name: str
    groups: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()
    """Other identity claims a grant may name as ``claim:NAME=VALUE`` (OIDC sign-in keeps
    those the roles name, e.g. ``sub`` or ``email``)."""


# --- passwords ----------------------------------------------------------------------------------


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): what the users file holds for a password."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# --- the users file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserDirectory:
    """The users file: ``users`` (name → password hash and groups) and ``roles`` (project →
    role → who)::

        users:
          alice: {password: "scrypt$...", groups: [release-managers]}
          victor: {password: "scrypt$..."}
        roles:
          kargo-demo:
            approver: [group:release-managers]
            promoter: [bob]
          "*":
            viewer: ["*"]
    """

    passwords: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    roles: Mapping[str, Mapping[Role, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def grantees(self) -> frozenset[str]:
        """Every name a grant holds (``alice``, ``group:ops``, ``claim:sub=12``, ``*``)."""
        return frozenset(
            who for grants in self.roles.values() for names in grants.values() for who in names
        )

    @property
    def claim_names(self) -> frozenset[str]:
        """The claims the grants name (``claim:NAME=VALUE``): what an OIDC session keeps."""
        return frozenset(
            who.removeprefix("claim:").partition("=")[0]
            for grants in self.roles.values()
            for names in grants.values()
            for who in names
            if who.startswith("claim:")
        )

    @classmethod
    def load(cls, path: Path) -> UserDirectory:
        try:
            body = YAML(typ="safe").load(path.read_text())
        except OSError as err:
            raise ConfigError(
                f"{UI_USERS_FILE_ENV}={str(path)!r}: cannot read it: {err.strerror}"
            ) from None
        except YAMLError as err:
            raise ConfigError(f"{path}: not YAML: {err}") from None
        return cls.parse(body or {}, where=str(path))

    @classmethod
    def parse(cls, body: Any, *, where: str = "users file") -> UserDirectory:
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: expected a mapping with users and roles")
        passwords: dict[str, str] = {}
        groups: dict[str, tuple[str, ...]] = {}
        for name, entry in (body.get("users") or {}).items():
            password = entry.get("password") if isinstance(entry, dict) else None
            if not isinstance(password, str) or not password.startswith("scrypt$"):
                raise ConfigError(
                    f"{where}: users.{name}.password: expected a scrypt hash "
                    "(make one with `freightline ui-password`)"
                )
            passwords[str(name)] = password
            groups[str(name)] = tuple(str(g) for g in entry.get("groups") or ())
        roles: dict[str, dict[Role, tuple[str, ...]]] = {}
        for project, grants in (body.get("roles") or {}).items():
            if not isinstance(grants, dict):
                raise ConfigError(f"{where}: roles.{project}: expected role: [who, ...]")
            roles[str(project)] = {}
            for role, who in grants.items():
                level = Role.__members__.get(str(role).upper())
                if level is None or level is Role.NONE:
                    raise ConfigError(
                        f'{where}: roles.{project}: unknown role "{role}" '
                        "(viewer, promoter, approver, admin)"
                    )
                if not isinstance(who, list):
                    raise ConfigError(f"{where}: roles.{project}.{role}: expected a list")
                roles[str(project)][level] = tuple(str(w) for w in who)
        for role, who in _kargo_claim_grants(body.get("oidc"), where).items():
            everywhere = roles.setdefault("*", {})
            everywhere[role] = (*everywhere.get(role, ()), *who)
        return cls(passwords=passwords, groups=groups, roles=roles)

    def role(self, user: User, project: str) -> Role:
        """The highest role ``user`` has in ``project`` (``*`` grants count for every project)."""
        names = {
            user.name,
            "*",
            *(f"group:{g}" for g in user.groups),
            *(f"claim:{k}={v}" for k, v in user.claims),
        }
        best = Role.NONE
        for scope in (project, "*"):
            for role, who in self.roles.get(scope, {}).items():
                if names.intersection(who) and role > best:
                    best = role
        return best


_KARGO_ROLES = {"admins": Role.ADMIN, "viewers": Role.VIEWER}


def _kargo_claim_grants(body: Any, where: str) -> dict[Role, tuple[str, ...]]:
    """Kargo's ``api.oidc`` claim mappings (``admins``/``viewers: {claims: {NAME: [VALUE]}}``)
    as grants in every project: a Kargo admin is an admin, a viewer a viewer, everywhere."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: oidc: expected admins and viewers, as in Kargo's api.oidc")
    grants: dict[Role, tuple[str, ...]] = {}
    for key, entry in body.items():
        role = _KARGO_ROLES.get(str(key))
        if role is None:
            why = (
                "Kargo's users and projectCreators have no Freightline counterpart (a project "
                "is listed to those with a role in it; projects come from config files)"
                if key in ("users", "projectCreators")
                else "expected admins or viewers"
            )
            raise ConfigError(f"{where}: oidc.{key}: {why}; grant roles per project instead")
        claims = entry.get("claims") if isinstance(entry, dict) else None
        if not isinstance(claims, dict) or not all(isinstance(v, list) for v in claims.values()):
            raise ConfigError(f"{where}: oidc.{key}.claims: expected CLAIM: [VALUE, ...]")
        grants[role] = tuple(
            f"claim:{name}={value}" for name, values in claims.items() for value in values
        )
    return grants


# --- sessions and CSRF --------------------------------------------------------------------------


class Signer:
    """HMAC-SHA256 over small JSON documents (session cookies) and CSRF tokens."""

    def __init__(self, secret: str | None) -> None:
        self._key = (secret or secrets.token_urlsafe(32)).encode()

    def sign(self, body: Mapping[str, Any]) -> str:
        data = base64.urlsafe_b64encode(json.dumps(body, sort_keys=True).encode()).decode()
        return f"{data}.{self._mac(data)}"

    def unsign(self, token: str) -> dict[str, Any] | None:
        data, _, mac = token.rpartition(".")
        if not data or not hmac.compare_digest(mac, self._mac(data)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(data))
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def csrf_token(self, user: str, nonce: str) -> str:
        """The token every form carries: bound to the user and to the browser's CSRF cookie
        (``nonce``), so another site can neither read nor make it."""
        return self._mac(f"csrf:{user}:{nonce}")

    def _mac(self, data: str) -> str:
        return hmac.new(self._key, data.encode(), hashlib.sha256).hexdigest()


class UsersAuthenticator:
    """Sign-in with a password from the users file; a signed session cookie after."""

    signs_in = True

    def __init__(self, directory: UserDirectory, signer: Signer) -> None:
        self.directory = directory
        self.signer = signer

    def check_password(self, name: str, password: str) -> User | None:
        stored = self.directory.passwords.get(name)
        if stored is None:
            # As slow as a real check, so an unknown name and a wrong password look alike.
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, stored):
            return None
        return User(name=name, groups=self.directory.groups.get(name, ()))

    def session_cookie(self, user: User) -> str:
        return self.signer.sign(
            {
                "user": user.name,
                "exp": int(time.time()) + SESSION_SECONDS,
            }
        )

    def identify(self, request: Request) -> User | None:
        token = request.cookies.get(SESSION_COOKIE)
        body = self.signer.unsign(token) if token else None
        if body is None or int(body.get("exp", 0)) < time.time():
            return None
        if "iss" in body:  # an OIDC session (the UI's sign-in changed): not a password one
            return None
        name = str(body.get("user", ""))
        if name not in self.directory.passwords:  # removed from the file since
            return None
        return User(name=name, groups=self.directory.groups.get(name, ()))


_DUMMY_HASH = hash_password("", salt=b"\0" * 16)


class ProxyAuthenticator:
    """Identity from an authenticating proxy's headers, believed only from trusted peers."""

    signs_in = False

    def __init__(self, *, user_header: str, groups_header: str, trusted: Iterable[str]) -> None:
        self.user_header = user_header
        self.groups_header = groups_header
        self.trusted = frozenset(trusted)

    def identify(self, request: Request) -> User | None:
        peer = request.client.host if request.client else ""
        if peer not in self.trusted:
            return None
        name = request.headers.get(self.user_header, "").strip()
        if not name:
            return None
        groups = tuple(
            g.strip() for g in request.headers.get(self.groups_header, "").split(",") if g.strip()
        )
        return User(name=name, groups=groups)


@dataclass(frozen=True)
class Access:
    """The UI's authentication and authorization, built once from the settings."""

    authenticator: UsersAuthenticator | ProxyAuthenticator | OidcAuthenticator
    directory: UserDirectory
    signer: Signer
    signing_key: str | None = None
    """Signs approvals and rejections (``freightline.contracts.approvals``), when set."""

    def role(self, user: User, project: str) -> Role:
        return self.directory.role(user, project)


def access_for(settings: UiSettings) -> Access:
    """The UI's :class:`Access` from its settings (ConfigError naming what is missing)."""
    directory = UserDirectory.load(settings.users_file) if settings.users_file else None
    signer = Signer(settings.secret.get_secret_value() if settings.secret else None)
    signing_key = settings.signing_key.get_secret_value() if settings.signing_key else None
    if signing_key:
        try:
            public_key_of(signing_key)
        except ConfigError:
            raise ConfigError(
                f"{UI_SIGNING_KEY_ENV}: not an Ed25519 private key (base64 of 32 bytes; "
                "`freightline ui-keygen` makes one)"
            ) from None
    if settings.auth == "users":
        if directory is None or not directory.passwords:
            raise ConfigError(
                f"{UI_USERS_FILE_ENV}: the UI needs a users file to sign people in "
                "(or FREIGHTLINE_UI_AUTH=proxy behind an authenticating proxy)"
            )
        return Access(UsersAuthenticator(directory, signer), directory, signer, signing_key)
    if settings.auth == "oidc":
        # Imported here: the OIDC module builds on this one (User, Signer, the directory).
        from freightline.app.ui_oidc import OidcAuthenticator, OidcConfig

        directory = directory or UserDirectory()
        oidc = OidcAuthenticator(OidcConfig.from_settings(settings), directory, signer)
        return Access(oidc, directory, signer, signing_key)
    authenticator = ProxyAuthenticator(
        user_header=settings.proxy_user_header,
        groups_header=settings.proxy_groups_header,
        trusted=settings.trusted_proxies,
    )
    return Access(authenticator, directory or UserDirectory(), signer, signing_key)
