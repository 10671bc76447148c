"""Sign-in at an OpenID Connect issuer: authorization code with PKCE, state and nonce.

``FREIGHTLINE_UI_AUTH=oidc``. The protocol's pieces are Authlib's and
joserfc's, not ours: Authlib builds the authorization URL and the S256 code
challenge, checks the issuer's discovery document (its OIDC discovery model)
and the ID token's claims (``CodeIDToken``); joserfc verifies the ID token's
signature against the issuer's JWKS. The HTTP requests (discovery, JWKS, the
token request) go through Freightline's httpx, not Authlib's httpx client
(which now wants the httpx2 package and warns on httpx). What this module
adds is the glue and the choices:

1. ``GET /oidc/start?next=/path``: a fresh ``state``, ``nonce`` and PKCE
   ``code_verifier`` go in a short-lived signed cookie (``freightline_oidc``:
   HttpOnly, SameSite=Lax so that it comes back with the issuer's redirect,
   path ``/oidc``), and the browser goes to the issuer's
   ``authorization_endpoint`` with the S256 challenge of the verifier.
2. ``GET /oidc/callback?code&state``: the state must match the cookie's
   (constant time); the code is exchanged at the ``token_endpoint`` with the
   verifier and the same redirect URI (with the client secret when there is
   one; without, a public client as Kargo's); the ID token must verify: its
   signature by a key of the issuer's JWKS (read again once when a ``kid`` is
   unknown: key rotation), an asymmetric algorithm the issuer announces, its
   ``iss`` the configured issuer, its ``aud`` holding the client ID (and
   ``azp`` the client ID when present), unexpired (60 s leeway), its
   ``nonce`` the cookie's, its ``at_hash`` the access token's when present.
3. The user is the username claim (``email`` by default, as in Kargo), their
   groups the groups claim (``groups``; from the userinfo endpoint when the
   ID token has none); a session cookie signed like the
   password sign-in's (HMAC-SHA256), HttpOnly, SameSite=Lax (a Strict one
   would be dropped on the redirect chain that started at the issuer), Secure
   over https, lasts as long as the ID token (at most 12 h). Then the page
   asked for.

An expired session sends the browser through the issuer again (silent while
the issuer's own session lasts): no refresh token is kept anywhere, so there
is no token store to protect. Roles stay the users file's ``roles``, checked
server-side on every action (``freightline.app.ui_auth``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from starlette.requests import Request

from freightline.app.ui_auth import SESSION_COOKIE, SESSION_SECONDS, Signer, User, UserDirectory
from freightline.errors import ConfigError
from freightline.logging import get_logger
from freightline.settings import (
    UI_OIDC_CLIENT_ID_ENV,
    UI_OIDC_ISSUER_URL_ENV,
    UI_OIDC_USERNAME_CLAIM_ENV,
    UiSettings,
)

__all__ = [
    "OidcAuthenticator",
    "OidcConfig",
    "SignInRefused",
    "verify_id_token",
]

log = get_logger("freightline.app.ui_oidc")

FLOW_COOKIE = "freightline_oidc"
"""The sign-in under way: state, nonce, code verifier, where to go after."""
FLOW_SECONDS = 600
"""How long a person has at the issuer before the sign-in must start again."""
CALLBACK_PATH = "/oidc/callback"
BASE_SCOPES = ("openid", "profile", "email")
"""Always asked for, as Kargo does; ``additionalScopes`` come after."""
LEEWAY_SECONDS = 60
"""Clock skew allowed between the issuer and the UI (exp, iat, nbf)."""
HTTP_TIMEOUT = 10.0
METADATA_SECONDS = 3600.0
"""How long the discovery document is kept before it is read again."""
# Never "none", never an HMAC algorithm (whose key would be the client secret).
ASYMMETRIC = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "Ed25519",
    }
)


class SignInRefused(Exception):
    """A sign-in that did not complete; the reason is shown to the person (no token in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OidcConfig:
    """Where the issuer is and who the UI is to it (Kargo's ``api.oidc`` settings)."""

    issuer_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = (*BASE_SCOPES, "groups")
    username_claim: str = "email"
    groups_claim: str = "groups"
    redirect_url: str | None = None
    """The callback registered at the issuer; None: the UI's own, as the browser reached it."""

    @classmethod
    def from_settings(cls, settings: UiSettings) -> OidcConfig:
        if not settings.oidc_issuer_url:
            raise ConfigError(
                f"{UI_OIDC_ISSUER_URL_ENV}: FREIGHTLINE_UI_AUTH=oidc needs the issuer's URL"
            )
        if not settings.oidc_client_id:
            raise ConfigError(
                f"{UI_OIDC_CLIENT_ID_ENV}: FREIGHTLINE_UI_AUTH=oidc needs the UI's client ID"
            )
        issuer = settings.oidc_issuer_url.rstrip("/")
        if urlsplit(issuer).scheme not in ("https", "http"):
            raise ConfigError(f'{UI_OIDC_ISSUER_URL_ENV}: "{issuer}" is not an http(s) URL')
        extra = [s for s in settings.oidc_additional_scopes if s not in BASE_SCOPES]
        return cls(
            issuer_url=issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_secret(),
            scopes=(*BASE_SCOPES, *extra),
            username_claim=settings.oidc_username_claim,
            groups_claim=settings.oidc_groups_claim,
            redirect_url=settings.oidc_redirect_url,
        )


def verify_id_token(
    id_token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: Sequence[str],
    access_token: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once its signature, issuer, audience, expiry and nonce check out;
    else :class:`SignInRefused` saying which did not (``InvalidKeyIdError`` for an unknown
    key: the caller reads the JWKS again and retries once)."""
    allowed = [a for a in algorithms if a in ASYMMETRIC]
    try:
        token = jwt.decode(id_token, keys, algorithms=allowed)
    except InvalidKeyIdError:
        raise
    except BadSignatureError:
        raise SignInRefused("the ID token's signature does not verify") from None
    except (JoseError, ValueError) as err:
        raise SignInRefused(f"the ID token is not a valid signed JWT ({_why(err)})") from None
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "sub": {"essential": True},
        },
        {"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    try:
        claims.validate(now=now, leeway=LEEWAY_SECONDS)
    except ExpiredTokenError:
        raise SignInRefused("the ID token has expired") from None
    except MissingClaimError as err:
        raise SignInRefused(f"the ID token lacks a claim ({_why(err)})") from None
    except InvalidClaimError as err:
        raise SignInRefused(f"the ID token has a wrong claim ({_why(err)})") from None
    except JoseError as err:
        raise SignInRefused(f"the ID token does not validate ({_why(err)})") from None
    return dict(claims)


def _why(err: Exception) -> str:
    return str(getattr(err, "description", "") or getattr(err, "error", "") or err)


class OidcAuthenticator:
    """Sign-in at an OIDC issuer; a signed session cookie after (see the module's doc)."""

    signs_in = True

    def __init__(
        self,
        config: OidcConfig,
        directory: UserDirectory,
        signer: Signer,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.signer = signer
        self._transport = transport  # tests: error paths a real issuer cannot produce
        self._metadata: dict[str, Any] | None = None
        self._metadata_read = 0.0
        self._keys: KeySet | None = None

    @property
    def issuer(self) -> str:
        return self.config.issuer_url

    # --- the issuer's documents --------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (kept an hour), checked by Authlib's OIDC discovery model."""
        if self._metadata is not None and time.monotonic() - self._metadata_read < METADATA_SECONDS:
            return self._metadata
        url = f"{self.issuer}/.well-known/openid-configuration"
        body = await self._get_json(url, "its discovery document")
        if str(body.get("issuer", "")).rstrip("/") != self.issuer:
            raise SignInRefused(
                f'the discovery document at {url} names the issuer "{body.get("issuer")}", '
                f'not "{self.issuer}"'
            )
        try:
            OpenIDProviderMetadata(body).validate()
        except ValueError as err:
            raise SignInRefused(f"the issuer's discovery document is not valid: {err}") from None
        methods = body.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise SignInRefused("the issuer does not support PKCE with S256")
        self._metadata, self._metadata_read = body, time.monotonic()
        return body

    async def keys(self, *, again: bool = False) -> KeySet:
        """The issuer's signing keys (its JWKS), read again when asked (an unknown ``kid``)."""
        if self._keys is None or again:
            metadata = await self.metadata()
            body = await self._get_json(str(metadata["jwks_uri"]), "its JWKS")
            try:
                self._keys = KeySet.import_key_set(body)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as err:
                raise SignInRefused(f"the issuer's JWKS is not valid: {_why(err)}") from None
        return self._keys

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=self._transport) as http:
                response = await http.get(url)
        except httpx.HTTPError as err:
            raise SignInRefused(f"the issuer did not answer for {what} ({url}): {err!r}") from None
        if response.status_code != 200:
            raise SignInRefused(f"the issuer answered {response.status_code} for {what} ({url})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SignInRefused(f"the issuer's answer for {what} ({url}) is not a JSON object")
        return body

    # --- the flow ------------------------------------------------------------------------------

    def redirect_uri(self, request: Request) -> str:
        return self.config.redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH

    async def begin(self, redirect_uri: str, target: str) -> tuple[str, str]:
        """The issuer's authorization URL, and the flow cookie that must come back with it."""
        metadata = await self.metadata()
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            metadata["authorization_endpoint"],
            client_id=self.config.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.config.scopes),
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        flow = self.signer.sign(
            {
                "use": "oidc-flow",  # the same key signs sessions: this is not one
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "redirect": redirect_uri,
                "next": target,
                "exp": int(time.time()) + FLOW_SECONDS,
            }
        )
        return str(url), flow

    async def complete(
        self, params: Mapping[str, str], flow_cookie: str | None
    ) -> tuple[User, str, int]:
        """The issuer's answer at the callback: (the user, where they were going, session end)."""
        flow = self.signer.unsign(flow_cookie) if flow_cookie else None
        if flow is None or flow.get("use") != "oidc-flow" or int(flow.get("exp", 0)) < time.time():
            raise SignInRefused(
                "this sign-in expired or was started in another browser; start again"
            )
        if not hmac.compare_digest(str(params.get("state", "")), str(flow["state"])):
            raise SignInRefused("the issuer's answer is not for this sign-in (state); start again")
        if "error" in params:
            description = params.get("error_description", "")
            raise SignInRefused(
                f"the issuer refused: {params['error'][:100]}"
                + (f" ({description[:300]})" if description else "")
            )
        code = params.get("code")
        if not code:
            raise SignInRefused("the issuer's answer has no authorization code")
        metadata = await self.metadata()
        token = await self._exchange(metadata["token_endpoint"], code, flow)
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the issuer sent no ID token (is the openid scope allowed?)")
        algorithms = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        access_token = token.get("access_token")
        nonce = str(flow["nonce"])
        try:
            claims = self._verify(id_token, await self.keys(), nonce, algorithms, access_token)
        except InvalidKeyIdError:
            try:
                keys = await self.keys(again=True)
                claims = self._verify(id_token, keys, nonce, algorithms, access_token)
            except InvalidKeyIdError:
                raise SignInRefused(
                    "the ID token is signed by a key the issuer does not list"
                ) from None
        if self.config.groups_claim not in claims and access_token:
            claims = await self._with_userinfo(metadata, claims, str(access_token))
        user = self.user_of(claims)
        expires = min(int(claims["exp"]), int(time.time()) + SESSION_SECONDS)
        return user, str(flow.get("next") or "/"), expires

    async def _exchange(self, endpoint: str, code: str, flow: Mapping[str, Any]) -> dict[str, Any]:
        """The token request (RFC 6749 4.1.3, with the PKCE verifier): the client secret in
        Basic auth when there is one, else the client ID alone (a public client)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": str(flow["redirect"]),
            "code_verifier": str(flow["verifier"]),
        }
        auth = None
        if self.config.client_secret:
            # RFC 6749 2.3.1: both form-encoded before they go in the Basic credentials.
            auth = httpx.BasicAuth(
                quote_plus(self.config.client_id), quote_plus(self.config.client_secret)
            )
        else:
            form["client_id"] = self.config.client_id
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=self._transport) as http:
                response = await http.post(
                    endpoint,
                    data=form,
                    auth=auth or httpx.USE_CLIENT_DEFAULT,
                    headers={"accept": "application/json"},
                )
        except httpx.HTTPError as err:
            raise SignInRefused(f"the issuer's token endpoint did not answer: {err!r}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SignInRefused(f"the issuer's token endpoint answered {response.status_code}")
        if response.status_code != 200 or "error" in body:
            description = str(body.get("error_description") or "")[:300]
            raise SignInRefused(
                f"the issuer refused the code: {str(body.get('error'))[:100]}"
                + (f" ({description})" if description else "")
            )
        return body

    async def _with_userinfo(
        self, metadata: Mapping[str, Any], claims: dict[str, Any], access_token: str
    ) -> dict[str, Any]:
        """The ID token's claims with the groups from the userinfo endpoint, for issuers that
        leave them out of the ID token (OIDC Core 5.3.2: only for the same ``sub``)."""
        endpoint = metadata.get("userinfo_endpoint")
        if not endpoint:
            return claims
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=self._transport) as http:
                response = await http.get(
                    str(endpoint), headers={"authorization": f"Bearer {access_token}"}
                )
            info = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            info = None
        if not isinstance(info, dict) or info.get("sub") != claims.get("sub"):
            log.warning("ui sign-in: no groups from the userinfo endpoint", endpoint=endpoint)
            return claims
        group = self.config.groups_claim
        return {**claims, group: info[group]} if group in info else claims

    def _verify(
        self,
        id_token: str,
        keys: KeySet,
        nonce: str,
        algorithms: Sequence[str],
        access_token: str | None,
    ) -> dict[str, Any]:
        return verify_id_token(
            id_token,
            keys,
            issuer=self.issuer,
            client_id=self.config.client_id,
            nonce=nonce,
            algorithms=algorithms,
            access_token=access_token,
        )

    def user_of(self, claims: Mapping[str, Any]) -> User:
        """The person an ID token names: the username claim, the groups claim, and the other
        claims the roles name (``claim:NAME=VALUE``)."""
        name = claims.get(self.config.username_claim)
        if not isinstance(name, str) or not name:
            raise SignInRefused(
                f'the ID token has no "{self.config.username_claim}" claim to name the user '
                f"({UI_OIDC_USERNAME_CLAIM_ENV})"
            )
        # Only what a grant names is kept: the session cookie stays small (a browser drops one
        # over 4 KB, and some people are in hundreds of groups) and the roles read the same.
        grantees = self.directory.grantees
        groups = tuple(
            g for g in _strings(claims.get(self.config.groups_claim)) if f"group:{g}" in grantees
        )
        kept = tuple(
            (claim, value)
            for claim in sorted(self.directory.claim_names)
            for value in _strings(claims.get(claim))
            if f"claim:{claim}={value}" in grantees
        )
        return User(name=name, groups=groups, claims=kept)

    # --- the session ---------------------------------------------------------------------------

    def session_cookie(self, user: User, expires: int) -> str:
        return self.signer.sign(
            {
                "user": user.name,
                "groups": list(user.groups),
                "claims": [list(pair) for pair in user.claims],
                "iss": self.issuer,
                "exp": expires,
            }
        )

    def _session(self, request: Request) -> dict[str, Any] | None:
        token = request.cookies.get(SESSION_COOKIE)
        body = self.signer.unsign(token) if token else None
        # A session of another sign-in (a password one, another issuer) is not this one's.
        return body if body is not None and body.get("iss") == self.issuer else None

    def identify(self, request: Request) -> User | None:
        body = self._session(request)
        if body is None or int(body.get("exp", 0)) < time.time():
            return None
        return User(
            name=str(body["user"]),
            groups=tuple(str(g) for g in body.get("groups") or ()),
            claims=tuple((str(k), str(v)) for k, v in body.get("claims") or ()),
        )

    def expired(self, request: Request) -> bool:
        """Whether the browser holds a session of this issuer that has ended: sign in again at
        the issuer (silently while the issuer's own session lasts)."""
        body = self._session(request)
        return body is not None and int(body.get("exp", 0)) < time.time()


def _strings(value: Any) -> tuple[str, ...]:
    """A claim's value as strings: one string, or a list of them (other types are skipped)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool))
    return ()
