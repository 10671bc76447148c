"""OIDC sign-in to the web UI, against the sandbox issuer (``sandbox/oidc.py``).

The ID token checks on their own first (no server), then the sandbox issuer's
refusals, then the whole flow: httpx for the protocol's edges, and Debian's
chromium (Playwright) for people signing in at the issuer's form, acting under
their roles from the groups claim, and signing out.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import KeySet, RSAKey
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project
from freightline.app.ui import UiServer
from freightline.app.ui_auth import Role, User, UserDirectory, access_for
from freightline.app.ui_oidc import OidcAuthenticator, SignInRefused, verify_id_token
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.resources import ProjectResources
from freightline.settings import UiSettings
from sandbox.oidc import IssuerClient, IssuerUser, OidcIssuer
from sandbox.registry import free_port
from tests.conftest import started_promotion, ui_refusal
from tests.pipelines import dump, freight_for, quickstart_documents, with_freight

PROJECT = "kargo-demo"
CLIENT_ID = "freightline-ui"
USERS = (
    IssuerUser("alice", "alice-pw", ("release-managers", "everyone")),
    IssuerUser("bob", "bob-pw", ("everyone",)),
    IssuerUser("victor", "victor-pw", ("everyone",)),
)
ROLES = f"""\
roles:
  {PROJECT}:
    approver: [group:release-managers]
    promoter: [bob@example.com]
oidc:                      # Kargo's api.oidc claim mappings
  viewers:
    claims: {{groups: [everyone]}}
"""


# --- the ID token checks, alone -------------------------------------------------------------------


@pytest.fixture(scope="module")
def minting() -> OidcIssuer:
    """The sandbox issuer's key, not served: tokens minted by hand."""
    return OidcIssuer(users=USERS, clients=[])


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "https://issuer.example",
        "sub": "alice",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        "email": "alice@example.com",
    }
    return {**claims, **overrides}


def _verify(issuer: OidcIssuer, token: str, **overrides: Any) -> dict[str, Any]:
    check: dict[str, Any] = {
        "issuer": "https://issuer.example",
        "client_id": CLIENT_ID,
        "nonce": "n-1",
        "algorithms": ["RS256"],
    }
    keys = KeySet.import_key_set(issuer.jwks())  # type: ignore[arg-type]
    return verify_id_token(token, keys, **{**check, **overrides})


def test_a_good_id_token_verifies(minting: OidcIssuer) -> None:
    claims = _verify(minting, minting.id_token(_claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID)))
    assert claims["email"] == "alice@example.com"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "another-app"}, "wrong claim"),
        ({"aud": ["another-app"], "azp": CLIENT_ID}, "wrong claim"),
        ({"iss": "https://evil.example"}, "wrong claim"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nonce": "n-2"}, "wrong claim"),
    ],
    ids=["wrong-aud", "aud-of-another-with-our-azp", "wrong-iss", "expired", "wrong-nonce"],
)
def test_a_bad_id_token_is_refused(
    minting: OidcIssuer, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(SignInRefused, match=reason):
        _verify(minting, minting.id_token(_claims(**overrides)))


def test_missing_nonce_and_missing_exp_are_refused(minting: OidcIssuer) -> None:
    for missing in ("nonce", "exp"):
        claims = _claims()
        del claims[missing]
        with pytest.raises(SignInRefused, match="lacks a claim"):
            _verify(minting, minting.id_token(claims))


def test_a_bad_signature_is_refused(minting: OidcIssuer) -> None:
    # Signed by another key that claims the issuer's kid: the signature does not verify.
    impostor = RSAKey.generate_key(2048, parameters={"kid": minting.key.kid or ""})
    with pytest.raises(SignInRefused, match="signature does not verify"):
        _verify(minting, minting.id_token(_claims(), key=impostor))
    # A token altered after signing (its payload swapped) does not verify either.
    header, _, signature = minting.id_token(_claims()).split(".")
    _, payload, _ = minting.id_token(_claims(email="mallory@example.com")).split(".")
    with pytest.raises(SignInRefused, match="signature does not verify"):
        _verify(minting, f"{header}.{payload}.{signature}")


def test_only_the_issuers_asymmetric_algorithms_are_accepted(minting: OidcIssuer) -> None:
    # An HMAC token "signed" with a public value, and an alg the issuer does not announce.
    from joserfc.jwk import OctKey

    forged = minting.id_token(_claims(), key=OctKey.import_key("k" * 32), algorithm="HS256")
    with pytest.raises(SignInRefused, match="not a valid signed JWT"):
        _verify(minting, forged, algorithms=["RS256", "HS256"])
    with pytest.raises(SignInRefused, match="not a valid signed JWT"):
        _verify(minting, minting.id_token(_claims()), algorithms=["ES256"])


def test_kargo_claim_mappings_become_grants_in_every_project() -> None:
    body = {
        "roles": {PROJECT: {"promoter": ["claim:sub=bob"]}},
        "oidc": {"admins": {"claims": {"email": ["root@example.com"], "groups": ["ops"]}}},
    }
    directory = UserDirectory.parse(body)
    assert directory.claim_names == {"sub", "email", "groups"}
    root = User("root", claims=(("email", "root@example.com"),))
    assert directory.role(root, "any-project") is Role.ADMIN
    assert directory.role(User("x", claims=(("groups", "ops"),)), PROJECT) is Role.ADMIN
    assert directory.role(User("bob", claims=(("sub", "bob"),)), PROJECT) is Role.PROMOTER
    assert directory.role(User("bob"), PROJECT) is Role.NONE
    with pytest.raises(ConfigError, match=r"oidc\.users: Kargo's users and projectCreators"):
        UserDirectory.parse({"oidc": {"users": {"claims": {"sub": ["a"]}}}})


def test_oidc_settings_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FREIGHTLINE_UI_OIDC_ISSUER_URL"):
        access_for(UiSettings(auth="oidc"))
    with pytest.raises(ConfigError, match="FREIGHTLINE_UI_OIDC_CLIENT_ID"):
        access_for(UiSettings(auth="oidc", oidc_issuer_url="https://issuer.example"))
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    settings = UiSettings(
        auth="oidc",
        oidc_issuer_url="https://issuer.example/",
        oidc_client_id=CLIENT_ID,
        oidc_secret_file=secret,
        oidc_additional_scopes="groups, offline_access",
    )
    authenticator = access_for(settings).authenticator
    assert isinstance(authenticator, OidcAuthenticator)
    config = authenticator.config
    assert config.issuer_url == "https://issuer.example" and config.client_secret == "s3cret"
    assert config.scopes == ("openid", "profile", "email", "groups", "offline_access")
    assert "s3cret" not in repr(config) and "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match=r"FREIGHTLINE_UI_OIDC_SECRET_FILE=.*cannot read it"):
        access_for(settings.model_copy(update={"oidc_secret_file": tmp_path / "nope"}))


# --- the sandbox issuer's refusals ------------------------------------------------------------------


@pytest.fixture
async def issuer() -> AsyncIterator[OidcIssuer]:
    client = IssuerClient(CLIENT_ID, redirect_uris=("http://127.0.0.1:1/oidc/callback",))
    async with OidcIssuer(users=USERS, clients=[client], auto_login="alice") as served:
        yield served


async def _code(http: httpx.AsyncClient, challenge: str, redirect: str) -> str:
    answer = await http.get(
        "/authorize",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert answer.status_code == 303, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


async def test_the_sandbox_issuer_refuses_what_a_real_one_refuses(issuer: OidcIssuer) -> None:
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    redirect = "http://127.0.0.1:1/oidc/callback"
    verifier = "v" * 64
    challenge = create_s256_code_challenge(verifier)
    async with httpx.AsyncClient(base_url=issuer.url) as http:
        # An unregistered redirect URI is shown, never redirected to.
        stolen = await http.get(
            "/authorize",
            params={"client_id": CLIENT_ID, "redirect_uri": "http://evil.example/cb"},
        )
        assert stolen.status_code == 400 and "not registered" in stolen.text
        # No PKCE, no code.
        plain = await http.get(
            "/authorize",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": redirect,
                "response_type": "code",
                "scope": "openid",
            },
        )
        assert "error=invalid_request" in plain.headers["location"]

        def token(code: str, **overrides: str) -> dict[str, str]:
            form = {
                "grant_type": "authorization_code",
                "client_id": CLIENT_ID,
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
            }
            return {**form, **overrides}

        code = await _code(http, challenge, redirect)
        wrong_verifier = await http.post("/token", data=token(code, code_verifier="w" * 64))
        assert wrong_verifier.status_code == 400
        assert "code_verifier does not match" in wrong_verifier.json()["error_description"]

        code = await _code(http, challenge, redirect)
        elsewhere = await http.post(
            "/token", data=token(code, redirect_uri="http://127.0.0.1:2/cb")
        )
        assert elsewhere.json()["error"] == "invalid_grant"
        assert "redirect_uri differs" in elsewhere.json()["error_description"]

        code = await _code(http, challenge, redirect)
        first = await http.post("/token", data=token(code))
        assert first.status_code == 200 and "id_token" in first.json()
        again = await http.post("/token", data=token(code))
        assert again.json() == {
            "error": "invalid_grant",
            "error_description": "the code was already used",
        }
        assert issuer.exchanges == 1


# --- the flow, end to end ---------------------------------------------------------------------------


def gated_for_alice(repo: Path) -> ProjectResources:
    """The quickstart up to git-push, prod-less; Stage test waits for alice's approval, by the
    name her ID token gives her."""
    documents = [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "PromotionTask":
            steps = document["spec"]["steps"]
            document["spec"]["steps"] = steps[: [s["uses"] for s in steps].index("git-push") + 1]
    documents.append(
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "ProjectConfig",
            "metadata": {"name": PROJECT, "namespace": PROJECT},
            "spec": {
                "promotionPolicies": [
                    {
                        "stage": "test",
                        "approval": {"approvers": ["alice@example.com"], "timeout": "1h"},
                    }
                ]
            },
        }
    )
    (resources,) = group_by_project(load_text(dump(documents), source="oidc")).values()
    return resources


@pytest.fixture
async def oidc_ui(client: Client, tmp_path: Path) -> AsyncIterator[tuple[UiServer, OidcIssuer]]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/oidc/callback"
    registered = IssuerClient(CLIENT_ID, redirect_uris=(callback,), secret="client-secret")
    roles = tmp_path / "roles.yaml"
    roles.write_text(ROLES)
    async with OidcIssuer(users=USERS, clients=[registered]) as issuer:
        settings = UiSettings(
            auth="oidc",
            users_file=roles,
            secret="test-secret",
            oidc_issuer_url=issuer.url,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret="client-secret",
        )
        async with UiServer(client, access_for(settings), port=port) as server:
            yield server, issuer


async def signed_in(browser: Browser, ui: UiServer, user: IssuerUser) -> Page:
    """A person in a browser: the UI sends them to the issuer, they sign in there, and land on
    the page they asked for."""
    context = await browser.new_context(base_url=ui.url, viewport={"width": 1360, "height": 860})
    page = await context.new_page()
    await page.goto(f"/projects/{PROJECT}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.click("#oidc-sign-in")
    await expect(page.locator("h1")).to_have_text("Sandbox issuer: sign in")
    await page.fill("input[name=username]", user.name)
    await page.fill("input[name=password]", user.password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{ui.url}/projects/{PROJECT}")
    await expect(page.locator("#user")).to_have_text(user.email)
    return page


async def test_people_sign_in_at_the_issuer_and_act_under_their_groups_roles(
    client: Client,
    worker: Worker,
    gitops_repo: Path,
    oidc_ui: tuple[UiServer, OidcIssuer],
    browser: Browser,
) -> None:
    ui, issuer = oidc_ui
    alice, bob, victor = USERS
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(gated_for_alice(gitops_repo), freight))

    # bob (a promoter, granted by his email) promotes into test.
    bob_page = await signed_in(browser, ui, bob)
    await expect(bob_page.locator("#user")).to_contain_text("bob@example.com")
    await bob_page.goto(f"/projects/{PROJECT}/stages/test")
    await bob_page.select_option("#promote-form select", freight.metadata.name)
    await bob_page.click("#promote-form button")
    await expect(bob_page.locator("#message")).to_contain_text("queued by bob@example.com")

    promotion = await started_promotion(client, PROJECT, "test")

    # victor is a viewer through Kargo's viewers mapping (groups: everyone): refused.
    victor_page = await signed_in(browser, ui, victor)
    await victor_page.goto(f"/promotions/{promotion}")
    await expect(victor_page.locator("#approval")).to_contain_text("0 of 1 approvals")
    await victor_page.click("#approve")
    await expect(victor_page.locator("#result h1")).to_have_text("Refused")
    await expect(victor_page.locator("#message")).to_contain_text(
        f'victor@example.com is a viewer in project "{PROJECT}"; this needs an approver'
    )
    status = await client.get_workflow_handle(promotion).query("status")
    assert status["approvals"] == []

    # alice is an approver through her groups claim (release-managers): she approves.
    alice_page = await signed_in(browser, ui, alice)
    await alice_page.goto(f"/promotions/{promotion}")
    await expect(alice_page.locator("#user >> xpath=..")).to_contain_text("(approver)")
    await alice_page.fill("#approve-form input[name=comment]", "looks good")
    await alice_page.click("#approve")
    await expect(alice_page.locator("#message")).to_contain_text("approved by alice@example.com")
    result: PromotionResult = await client.get_workflow_handle(
        promotion, result_type=PromotionResult
    ).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    # The audit trail: the approval carries her OIDC identity, shown on the promotion's page.
    assert [(a.user, a.comment) for a in result.approvals] == [("alice@example.com", "looks good")]
    await alice_page.goto(f"/promotions/{promotion}")
    await expect(alice_page.locator("#approvals")).to_contain_text("alice@example.com")
    await expect(alice_page.locator("#requested-by")).to_have_text("bob@example.com")
    assert issuer.exchanges == 3

    # Signing out ends the session: the next page sends her to sign in again.
    await alice_page.click("button.link")
    await expect(alice_page).to_have_url(re.compile(r"/login$"))
    await alice_page.goto(f"/projects/{PROJECT}")
    await expect(alice_page).to_have_url(re.compile(r"/login\?next="))
    await expect(alice_page.locator("#oidc-sign-in")).to_be_visible()


async def _sign_in(
    http: httpx.AsyncClient, issuer: OidcIssuer, user: IssuerUser
) -> tuple[str, httpx.Response]:
    """The flow with httpx: /oidc/start, the issuer's form, the callback."""
    to_issuer = await http.get("/oidc/start", params={"next": f"/projects/{PROJECT}"})
    assert to_issuer.status_code == 303, to_issuer.text
    location = to_issuer.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    assert query["scope"] == ["openid profile email groups"]
    form = {k: v[0] for k, v in query.items()} | {"username": user.name, "password": user.password}
    back = await http.post(f"{issuer.url}/authorize", data=form)
    assert back.status_code == 303, back.text
    return back.headers["location"], await http.get(back.headers["location"])


async def test_the_callback_refuses_a_forged_or_foreign_answer(
    client: Client, oidc_ui: tuple[UiServer, OidcIssuer]
) -> None:
    ui, issuer = oidc_ui
    async with httpx.AsyncClient(base_url=ui.url) as http:
        # A callback with no sign-in under way in this browser (login CSRF): refused.
        forged = await http.get("/oidc/callback", params={"code": "c", "state": "s"})
        assert forged.status_code == 401 and "start again" in forged.text
        # A state that is not this browser's: refused before the code is spent.
        await http.get("/oidc/start")
        foreign = await http.get("/oidc/callback", params={"code": "c", "state": "other"})
        assert foreign.status_code == 401 and "(state)" in foreign.text
        # The issuer's own refusal is shown as such.
        start = await http.get("/oidc/start")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        denied = await http.get(
            "/oidc/callback",
            params={"error": "access_denied", "error_description": "<b>no</b>", "state": state},
        )
        assert denied.status_code == 401 and "access_denied (&lt;b&gt;no&lt;/b&gt;)" in denied.text
        # A session cookie (signed by the same key) passed off as a sign-in under way: refused.
        http.cookies.clear()
        http.cookies.set("freightline_oidc", _ui_signed(ui, {"state": "s", "exp": 2**40}))
        passed_off = await http.get("/oidc/callback", params={"code": "c", "state": "s"})
        assert passed_off.status_code == 401
        assert "expired or was started in another browser" in passed_off.text
        http.cookies.clear()
        # A good sign-in; its callback replayed: the sign-in is over, refused.
        callback, landed = await _sign_in(http, issuer, USERS[1])
        assert landed.status_code == 303 and landed.headers["location"] == f"/projects/{PROJECT}"
        session = next(c for c in landed.headers.get_list("set-cookie") if "session" in c)
        assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
        replayed = await http.get(callback)
        assert replayed.status_code == 401 and "start again" in replayed.text
    assert issuer.exchanges == 1


async def test_an_expired_session_goes_through_the_issuer_again(
    client: Client, oidc_ui: tuple[UiServer, OidcIssuer]
) -> None:
    ui, issuer = oidc_ui
    oidc = ui.ui.access.authenticator
    assert isinstance(oidc, OidcAuthenticator)
    async with httpx.AsyncClient(base_url=ui.url) as http:
        _, landed = await _sign_in(http, issuer, USERS[2])
        assert landed.status_code == 303
        assert "signed in as" in (await http.get("/")).text
        # The session's end passed (as the ID token's exp does): back through the issuer,
        # which, with its own session alive (auto_login here), signs her in without a form.
        victor = User("victor@example.com", groups=("everyone",))
        ended = oidc.session_cookie(victor, int(time.time()) - 1)
        http.cookies.set("freightline_session", ended, domain="127.0.0.1", path="/")
        again = await http.get(f"/projects/{PROJECT}")
        assert again.status_code == 303
        assert again.headers["location"] == f"/oidc/start?next=/projects/{PROJECT}"
        issuer.auto_login = "victor"
        to_issuer = await http.get(again.headers["location"])
        back = await http.get(to_issuer.headers["location"])
        landed = await http.get(back.headers["location"])
        assert landed.headers["location"] == f"/projects/{PROJECT}"
        assert "victor@example.com" in (await http.get("/")).text
    assert issuer.exchanges == 2


async def test_groups_missing_from_the_id_token_come_from_userinfo(
    client: Client, oidc_ui: tuple[UiServer, OidcIssuer]
) -> None:
    ui, issuer = oidc_ui
    issuer.groups_in_id_token = False
    oidc = ui.ui.access.authenticator
    assert isinstance(oidc, OidcAuthenticator)
    async with httpx.AsyncClient(base_url=ui.url) as http:
        _, landed = await _sign_in(http, issuer, USERS[0])
        assert landed.status_code == 303
        session = oidc.signer.unsign(http.cookies["freightline_session"].strip('"'))
    # Only what the roles name is kept in the session: her group grant, and the groups claim
    # value Kargo's viewers mapping names.
    assert session is not None
    assert session["groups"] == ["release-managers"]
    assert session["claims"] == [["groups", "everyone"]]


def test_an_eddsa_issuer_verifies_too() -> None:
    eddsa = OidcIssuer(users=USERS, clients=[], algorithm="Ed25519")
    token = eddsa.id_token(_claims())
    assert _verify(eddsa, token, algorithms=["Ed25519"])["sub"] == "alice"
    with pytest.raises(SignInRefused, match="not a valid signed JWT"):
        _verify(eddsa, token, algorithms=["RS256"])


async def test_a_rotated_issuer_key_is_fetched_once_and_an_unlisted_one_refused(
    client: Client, oidc_ui: tuple[UiServer, OidcIssuer]
) -> None:
    ui, issuer = oidc_ui
    async with httpx.AsyncClient(base_url=ui.url) as http:
        assert (await _sign_in(http, issuer, USERS[1]))[1].status_code == 303
        # The issuer rotates its key: the UI reads the JWKS again for the new kid.
        issuer.key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
        assert (await _sign_in(http, issuer, USERS[1]))[1].status_code == 303
        # A key the JWKS does not list (the issuer signs with one it does not publish).
        published = issuer.jwks()
        issuer.key = RSAKey.generate_key(2048, parameters={"alg": "RS256"}, auto_kid=True)
        issuer.jwks = lambda: published  # type: ignore[method-assign]
        _, refused = await _sign_in(http, issuer, USERS[1])
        assert refused.status_code == 401
        assert "signed by a key the issuer does not list" in refused.text


async def test_an_issuer_that_is_down_or_not_itself_is_said_so(
    client: Client, tmp_path: Path
) -> None:
    async with OidcIssuer(users=USERS, clients=[]) as issuer:
        port = urlsplit(issuer.url).port
        # Discovery names http://127.0.0.1:PORT; the UI was told http://localhost:PORT.
        for configured, reason in (
            (f"http://localhost:{port}", "names the issuer"),
            (f"http://127.0.0.1:{free_port()}", "the issuer did not answer"),
        ):
            settings = UiSettings(auth="oidc", oidc_issuer_url=configured, oidc_client_id=CLIENT_ID)
            async with (
                UiServer(client, access_for(settings)) as server,
                httpx.AsyncClient(base_url=server.url) as http,
            ):
                answer = await http.get("/oidc/start")
                assert answer.status_code == 502 and reason in answer.text, answer.text


def _ui_signed(ui: UiServer, body: dict[str, Any]) -> str:
    return ui.ui.access.signer.sign(body)


def test_freightline_ui_without_an_issuer_stops_with_one_line(tmp_path: Path) -> None:
    env = {"FREIGHTLINE_UI_AUTH": "oidc", "FREIGHTLINE_UI_OIDC_CLIENT_SECRET": "never-shown"}
    done = ui_refusal(tmp_path, env)
    assert (
        "FREIGHTLINE_UI_OIDC_ISSUER_URL: FREIGHTLINE_UI_AUTH=oidc needs the issuer" in done.stderr
    )
    assert "never-shown" not in done.stdout + done.stderr
