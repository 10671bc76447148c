"""A small local OpenID Connect issuer, for the tests and the demo (never for production).

It does what the web UI's OIDC sign-in (``freightline.app.ui_oidc``) needs
from a real issuer (Dex, Keycloak, Okta), with the same refusals::

    GET  /.well-known/openid-configuration   discovery
    GET  /jwks                               the public signing key
    GET  /authorize                          a sign-in form (or, with auto_login, straight back)
    POST /authorize                          the form: user and password
    POST /token                              authorization_code, PKCE (S256) required
    GET  /userinfo                           the claims, for a Bearer access token

ID tokens are signed with joserfc (RS256 by default, or EdDSA with Ed25519,
named ``Ed25519`` as RFC 9864 has it: joserfc warns on the older ``EdDSA``) and
carry ``sub``, ``email``, ``preferred_username``, ``name``, ``groups``,
``nonce``, ``at_hash``. Refused, as a real issuer refuses them: an unknown
client or a redirect URI it did not register (shown on the issuer's page,
never redirected to); an authorization request without an S256 code
challenge; at ``/token``: a wrong client secret, an unknown, expired (60 s)
or already used code (a code works once), a redirect URI other than the
authorization request's, a ``code_verifier`` whose S256 is not the challenge.

``async with OidcIssuer(users=..., clients=...) as issuer:`` serves it on a
free loopback port (``issuer.url`` is the issuer). Tests mint tokens of their
own with :meth:`OidcIssuer.id_token`.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode

from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oidc.core.util import create_half_hash
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey, RSAKey
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from freightline.app.http import HttpServer, build_app, serve

__all__ = ["IssuerClient", "IssuerUser", "OidcIssuer"]

CODE_SECONDS = 60
"""How long an authorization code may wait for its exchange."""


@dataclass(frozen=True)
class IssuerUser:
    """A person the issuer knows."""

    name: str
    password: str = field(repr=False)
    groups: tuple[str, ...] = ()

    @property
    def email(self) -> str:
        return f"{self.name}@example.com"


@dataclass(frozen=True)
class IssuerClient:
    """An application registered at the issuer (the web UI)."""

    client_id: str
    redirect_uris: tuple[str, ...]
    secret: str | None = field(default=None, repr=False)
    """None: a public client (PKCE alone binds the code)."""


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    user: IssuerUser
    nonce: str | None
    challenge: str
    scope: str
    expires: float


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form (the last value of each field), as the UI reads its own."""
    return {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}


def _error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"cache-control": "no-store"},
    )


class OidcIssuer:
    """The issuer: its users, its clients, its key; served by ``async with``."""

    def __init__(
        self,
        *,
        users: Iterable[IssuerUser],
        clients: Iterable[IssuerClient],
        auto_login: str | None = None,
        token_seconds: int = 3600,
        algorithm: Literal["RS256", "Ed25519"] = "RS256",
        groups_in_id_token: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.users = {user.name: user for user in users}
        self.clients = {client.client_id: client for client in clients}
        self.auto_login = auto_login
        """Who is signed in without a form (None: the form asks)."""
        self.token_seconds = token_seconds
        self.algorithm = algorithm
        self.groups_in_id_token = groups_in_id_token
        """False: the groups only at /userinfo (as Okta and Azure AD may do)."""
        self.key: RSAKey | OKPKey = (
            RSAKey.generate_key(2048, parameters={"use": "sig", "alg": algorithm}, auto_kid=True)
            if algorithm == "RS256"
            else OKPKey.generate_key(
                "Ed25519", parameters={"use": "sig", "alg": algorithm}, auto_kid=True
            )
        )
        self.host, self._port = host, port
        self._grants: dict[str, _Grant] = {}
        self._used: set[str] = set()
        self._access: dict[str, dict[str, Any]] = {}
        self.exchanges = 0
        """Codes exchanged for tokens (what a test counts)."""
        self._server: HttpServer | None = None
        self._stack = contextlib.AsyncExitStack()

    # --- serving -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "enter the issuer first"
        return f"http://{self.host}:{self._server.port}"

    async def __aenter__(self) -> OidcIssuer:
        app = build_app(
            Route("/.well-known/openid-configuration", self._discovery),
            Route("/jwks", self._jwks),
            Route("/authorize", self._authorize, methods=["GET", "POST"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/userinfo", self._userinfo),
        )
        self._server = await self._stack.enter_async_context(
            serve(app, self.host, self._port, name="oidc-issuer")
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._server = None

    # --- tokens --------------------------------------------------------------------------------

    def claims_of(self, user: IssuerUser) -> dict[str, Any]:
        return {
            "sub": user.name,
            "email": user.email,
            "email_verified": True,
            "preferred_username": user.name,
            "name": user.name.capitalize(),
            "groups": list(user.groups),
        }

    def id_token(
        self,
        claims: Mapping[str, Any],
        *,
        key: RSAKey | OKPKey | OctKey | None = None,
        algorithm: str | None = None,
    ) -> str:
        """A signed ID token with these claims (by the issuer's key unless another is given)."""
        key = key or self.key
        alg = algorithm or self.algorithm
        header = {"alg": alg, **({"kid": key.kid} if key.kid else {})}
        return jwt.encode(header, dict(claims), key, algorithms=[alg])

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    # --- endpoints -----------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        base = self.url
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.algorithm],
                "scopes_supported": ["openid", "profile", "email", "groups"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
                "claims_supported": ["sub", "email", "preferred_username", "name", "groups"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        if request.method == "POST":
            params = await _form(request)
        else:
            params = dict(request.query_params)
        client = self.clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None:
            return self._page("Unknown client", "<p>This application is not registered.</p>", 400)
        if redirect_uri not in client.redirect_uris:
            # Never redirect to an unregistered URI: that is how codes get stolen.
            return self._page(
                "Wrong redirect URI",
                f"<p>{html.escape(redirect_uri)} is not registered for this client.</p>",
                400,
            )

        def back(**answer: str) -> Response:
            answer["state"] = params.get("state", "")
            return RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=303)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if "openid" not in params.get("scope", "").split():
            return back(error="invalid_scope", error_description="openid is required")
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        user: IssuerUser | None = None
        failed = False
        if request.method == "POST":
            candidate = self.users.get(params.get("username", ""))
            password = params.get("password", "")
            if candidate and hmac.compare_digest(candidate.password, password):
                user = candidate
            else:
                failed = True
        elif self.auto_login:
            user = self.users[self.auto_login]
        if user is None:
            return self._login_form(params, failed)
        code = secrets.token_urlsafe(32)
        self._grants[code] = _Grant(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            user=user,
            nonce=params.get("nonce"),
            challenge=params["code_challenge"],
            scope=params.get("scope", ""),
            expires=time.monotonic() + CODE_SECONDS,
        )
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        form = await _form(request)
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:]).decode()
            except ValueError:
                return _error("invalid_client", "malformed Basic credentials", 401)
            client_id, _, secret = decoded.partition(":")
        client = self.clients.get(client_id)
        if client is None:
            return _error("invalid_client", "unknown client", 401)
        if client.secret is not None and not hmac.compare_digest(client.secret, secret or ""):
            return _error("invalid_client", "wrong client secret", 401)
        if form.get("grant_type") != "authorization_code":
            return _error("unsupported_grant_type", "only authorization_code")
        code = form.get("code", "")
        if code in self._used:
            return _error("invalid_grant", "the code was already used")
        grant = self._grants.pop(code, None)
        if grant is None or grant.client_id != client.client_id:
            return _error("invalid_grant", "unknown code")
        self._used.add(code)
        if grant.expires < time.monotonic():
            return _error("invalid_grant", "the code expired")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _error("invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier", "")
        if not verifier or not compare_s256_code_challenge(verifier, grant.challenge):
            return _error("invalid_grant", "the code_verifier does not match the code_challenge")
        self.exchanges += 1
        now = int(time.time())
        access_token = secrets.token_urlsafe(32)
        claims = {
            "iss": self.url,
            "aud": client.client_id,
            "iat": now,
            "exp": now + self.token_seconds,
            "auth_time": now,
            **self.claims_of(grant.user),
        }
        if not self.groups_in_id_token:
            del claims["groups"]
        if grant.nonce:
            claims["nonce"] = grant.nonce
        at_hash = create_half_hash(access_token, self.algorithm)
        if at_hash:
            claims["at_hash"] = at_hash.decode()
        self._access[access_token] = self.claims_of(grant.user)
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": self.token_seconds,
                "id_token": self.id_token(claims),
                "scope": grant.scope,
            },
            headers={"cache-control": "no-store"},
        )

    async def _userinfo(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        claims = self._access.get(token)
        if claims is None:
            return _error("invalid_token", "unknown access token", 401)
        return JSONResponse(claims)

    # --- pages ---------------------------------------------------------------------------------

    def _login_form(self, params: Mapping[str, str], failed: bool) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k not in ("username", "password")
        )
        body = (
            '<form method="post" action="/authorize">'
            + ('<p id="failed">Wrong user name or password.</p>' if failed else "")
            + hidden
            + '<label>User <input name="username" autofocus></label> '
            + '<label>Password <input name="password" type="password"></label> '
            + '<button type="submit">Sign in</button></form>'
        )
        return self._page("Sandbox issuer: sign in", body, 401 if failed else 200)

    @staticmethod
    def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}",
            status_code=status,
            headers={"cache-control": "no-store"},
        )
