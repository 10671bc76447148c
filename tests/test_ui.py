"""The web UI in a real browser (Playwright driving Debian's chromium) on a real pipeline.

The Temporal dev server, the worker and the UI run in this process; the browser
signs in as the people of a users file and clicks. (The README's screenshots
come from the demo: ``scripts/screenshots``.)
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from freightline.app.client import (
    apply_project,
    promote_in_stage,
    stage_states,
)
from freightline.app.ui import UiServer
from freightline.app.ui_auth import access_for, hash_password
from freightline.contracts.promotion import PromotionPhase, PromotionResult
from freightline.contracts.stage import StageState
from freightline.kargo.resources import Freight
from freightline.settings import UiSettings, load_settings
from sandbox.registry import free_port
from tests.conftest import started_promotion, ui_refusal, wait_for
from tests.pipelines import (
    freight_for,
    gated_at_test,
    quickstart_auto,
    quickstart_up_to_push,
    with_freight,
)
from tests.test_approval import freightline_cli
from worker import run_worker

pytestmark = pytest.mark.integration

PROJECT = "kargo-demo"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "victor": "victor-pw"}
XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def users_file(path: Path) -> Path:
    entries = "\n".join(
        f'  {name}: {{password: "{hash_password(pw)}"'
        + (", groups: [release-managers]" if name == "alice" else "")
        + "}"
        for name, pw in PASSWORDS.items()
    )
    path.write_text(
        f"users:\n{entries}\n"
        "roles:\n"
        f"  {PROJECT}:\n"
        "    approver: [group:release-managers]\n"
        "    promoter: [bob]\n"
        '  "*":\n'
        '    viewer: ["*"]\n'
    )
    return path


@pytest.fixture
async def ui(client: Client, tmp_path: Path) -> AsyncIterator[UiServer]:
    settings = UiSettings(users_file=users_file(tmp_path / "users.yaml"), secret="test-secret")
    async with UiServer(client, access_for(settings)) as server:
        yield server


async def signed_in(browser: Browser, ui: UiServer, user: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=ui.url, viewport={"width": 1360, "height": 860})
    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.fill("input[name=user]", user)
    await page.fill("input[name=password]", PASSWORDS[user])
    await page.click("button[type=submit]")
    await expect(page.locator("#user")).to_have_text(user)
    return context, page


async def test_the_pipeline_live_and_an_approval_by_an_approver_not_a_viewer(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer, browser: Browser
) -> None:
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(gated_at_test(gitops_repo), freight))
    _, alice = await signed_in(browser, ui, "alice")

    # The project's page: the graph of Warehouse -> test -> uat -> prod, from real state.
    await alice.click(f"text={PROJECT}")
    graph = alice.locator("svg.pipeline")
    for node in ("warehouse:kargo-demo", "stage:test", "stage:uat", "stage:prod"):
        await expect(graph.locator(f'[data-node="{node}"]')).to_have_count(1)
    await expect(graph.locator("path.edge")).to_have_count(3)
    await expect(alice.locator('tr[data-stage="test"]')).to_contain_text("—")

    # bob (a promoter) promotes from the Stage's page; alice's page follows, not reloaded.
    _, bob = await signed_in(browser, ui, "bob")
    await bob.goto(f"/projects/{PROJECT}/stages/test")
    await bob.select_option("#promote-form select", freight.metadata.name)
    await bob.click("#promote-form button")
    await expect(bob.locator("#result h1")).to_have_text("Done")
    await expect(bob.locator("#message")).to_contain_text("queued by bob")
    test_node = alice.locator('[data-node="stage:test"]')
    await expect(test_node).to_contain_text("waiting for approval", timeout=30_000)

    promotion = await started_promotion(client, PROJECT, "test")

    # victor (a viewer) is refused, server-side, and the promotion keeps waiting.
    _, victor = await signed_in(browser, ui, "victor")
    await victor.goto(f"/promotions/{promotion}")
    await expect(victor.locator("#approval")).to_contain_text("0 of 1 approvals")
    await expect(victor.locator("#requested-by")).to_have_text("bob")
    await victor.click("#approve")
    await expect(victor.locator("#result h1")).to_have_text("Refused")
    await expect(victor.locator("#message")).to_contain_text(
        f'victor is a viewer in project "{PROJECT}"; this needs an approver'
    )
    status = await client.get_workflow_handle(promotion).query("status")
    assert status["approval"] is not None and status["approvals"] == []

    # alice approves, with a comment that tries to run a script: it is shown, not run.
    await alice.goto(f"/promotions/{promotion}")
    await alice.fill("#approve-form input[name=comment]", XSS)
    await alice.click("#approve")
    await expect(alice.locator("#result h1")).to_have_text("Done")
    await expect(alice.locator("#message")).to_contain_text("approved by alice")
    result: PromotionResult = await client.get_workflow_handle(
        promotion, result_type=PromotionResult
    ).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert [(a.user, a.comment) for a in result.approvals] == [("alice", XSS)]

    await alice.goto(f"/promotions/{promotion}")
    await expect(alice.locator("#phase")).to_have_text("Succeeded")
    await expect(alice.locator("#approvals .comment")).to_have_text(XSS)
    await expect(alice.locator("#approvals")).to_contain_text("alice")
    assert await alice.evaluate("window.pwned") is None
    temporal = await alice.locator("a.temporal").first.get_attribute("href")
    assert temporal is not None and temporal.endswith(promotion.replace(":", "%3A"))

    # The graph updates live when the promotion ends: test holds the Freight.
    await alice.goto(f"/projects/{PROJECT}")
    await expect(test_node).to_contain_text(freight.alias or "", timeout=30_000)
    await expect(alice.locator('tr[data-stage="test"]')).to_contain_text(freight.alias or "")

    # The Freight timeline: where it is, its full ID on the detail view.
    await alice.goto(f"/projects/{PROJECT}/freight")
    row = alice.locator(f'tr[data-freight="{freight.alias}"]')
    await expect(row.locator("td.here")).to_contain_text("current")
    await row.locator("summary").click()
    await expect(row).to_contain_text(freight.metadata.name)

    # The Stage's page: its Freight, history and promotions, and the actions alice may take.
    await alice.goto(f"/projects/{PROJECT}/stages/test")
    await expect(alice.locator("dl.facts")).to_contain_text(freight.alias or "")
    await expect(alice.locator("section", has_text="History")).to_contain_text(promotion)
    await expect(alice.locator("#promote-form")).to_be_visible()


async def test_the_graph_follows_a_promotion_without_reloading(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer, browser: Browser
) -> None:
    freight = freight_for("1.29.2")
    await apply_project(client, with_freight(gated_at_test(gitops_repo), freight))
    _, alice = await signed_in(browser, ui, "alice")
    await alice.goto(f"/projects/{PROJECT}")
    await expect(alice.locator("#live")).to_have_class(re.compile("on"))
    ticket = await promote_in_stage(client, PROJECT, "test", freight.alias or "", "dev")
    node = alice.locator('[data-node="stage:test"]')
    await expect(node).to_contain_text("waiting for approval", timeout=30_000)
    await wait_for(lambda: _exists(client, ticket.promotion))
    await client.get_workflow_handle(ticket.promotion).execute_update(
        "approve_promotion", {"user": "alice"}, result_type=str
    )
    await expect(node).to_contain_text(freight.alias or "", timeout=30_000)
    await expect(node).not_to_contain_text("waiting")
    assert int(await alice.locator("#pipeline").get_attribute("data-updates") or 0) >= 2


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except Exception:
        return False
    return True


# --- without a browser: CSRF, sign-in, the proxy mode ----------------------------------------------


async def login(http: httpx.AsyncClient, user: str) -> None:
    page = await http.get("/login")
    csrf = _csrf(page.text)
    answer = await http.post(
        "/login", data={"csrf": csrf, "user": user, "password": PASSWORDS[user]}
    )
    assert answer.status_code == 303, answer.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, html
    return found.group(1)


async def test_every_post_needs_its_csrf_token_and_the_same_origin(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer
) -> None:
    await apply_project(client, gated_at_test(gitops_repo))
    async with httpx.AsyncClient(base_url=ui.url) as http:
        assert (await http.get(f"/projects/{PROJECT}")).status_code == 303  # to /login
        await login(http, "bob")
        page = await http.get(f"/projects/{PROJECT}")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        csrf = _csrf(page.text)
        refresh = f"/projects/{PROJECT}/warehouses/kargo-demo/refresh"

        missing = await http.post(refresh, data={})
        assert missing.status_code == 403 and "CSRF" in missing.text
        forged = await http.post(refresh, data={"csrf": "0" * 64})
        assert forged.status_code == 403
        cross = await http.post(
            refresh, data={"csrf": csrf}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403 and "another site" in cross.text
        done = await http.post(refresh, data={"csrf": csrf})
        assert done.status_code == 200 and "refresh requested by bob" in done.text

    # Another browser's token (a valid one, for another session) does not work either.
    async with httpx.AsyncClient(base_url=ui.url) as other:
        await login(other, "bob")
        stolen = await other.post(refresh, data={"csrf": csrf})
        assert stolen.status_code == 403


async def test_a_wrong_password_and_a_tampered_session_are_refused(ui: UiServer) -> None:
    async with httpx.AsyncClient(base_url=ui.url) as http:
        # After sign-in, "next" leads only to a path on the UI itself.
        for target, lands in (("/projects/x", "/projects/x"), ("//evil.example", "/")):
            for hostile in (target, target.replace("//", "/\\")):
                csrf = _csrf((await http.get("/login")).text)
                answer = await http.post(
                    "/login",
                    params={"next": hostile},
                    data={"csrf": csrf, "user": "bob", "password": PASSWORDS["bob"]},
                )
                assert answer.headers["location"] == (lands if hostile == target else "/")
        http.cookies.clear()
        csrf = _csrf((await http.get("/login")).text)
        wrong = await http.post("/login", data={"csrf": csrf, "user": "alice", "password": "x"})
        assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        await login(http, "victor")
        cookie = http.cookies["freightline_session"]
        data, _, mac = cookie.rpartition(".")
        http.cookies.set("freightline_session", data.replace("a", "b", 1) + "." + mac)
        assert (await http.get("/")).status_code == 303  # back to sign-in


async def test_proxy_mode_believes_only_trusted_peers(
    client: Client, worker: Worker, gitops_repo: Path, tmp_path: Path
) -> None:
    await apply_project(client, gated_at_test(gitops_repo))
    roles = tmp_path / "roles.yaml"
    roles.write_text(f"roles:\n  {PROJECT}:\n    approver: [group:release]\n")
    trusted = UiSettings(auth="proxy", users_file=roles, trusted_proxies=("127.0.0.1",))
    async with (
        UiServer(client, access_for(trusted)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        headers = {"x-forwarded-user": "<b>carol</b>", "x-forwarded-groups": "release, ops"}
        page = await http.get(f"/projects/{PROJECT}", headers=headers)
        assert page.status_code == 200
        assert "&lt;b&gt;carol&lt;/b&gt;" in page.text and "<b>carol</b>" not in page.text
        assert "(approver)" in page.text
        nobody = await http.get(f"/projects/{PROJECT}")
        assert nobody.status_code == 401
        stranger = await http.get(f"/projects/{PROJECT}", headers={"x-forwarded-user": "dan"})
        assert stranger.status_code == 403 and "dan has no role" in stranger.text
    untrusted = UiSettings(auth="proxy", users_file=roles, trusted_proxies=("10.0.0.1",))
    async with (
        UiServer(client, access_for(untrusted)) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        spoofed = await http.get(f"/projects/{PROJECT}", headers=headers)
        assert spoofed.status_code == 401


# --- who serves it ----------------------------------------------------------------------------------


async def test_the_worker_serves_the_ui_when_told_where(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = load_settings().replace(
        ui={"address": f"127.0.0.1:{port}", "users_file": users_file(tmp_path / "users.yaml")}
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(client, settings=settings, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def serving() -> bool:
                try:
                    return (await http.get("/login")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(serving)
            await login(http, "victor")
            assert "signed in as" in (await http.get("/")).text
    finally:
        stop.set()
        await running


def test_the_ui_without_a_users_file_stops_with_one_line(tmp_path: Path) -> None:
    done = ui_refusal(tmp_path)
    assert "FREIGHTLINE_UI_USERS_FILE: the UI needs a users file" in done.stderr


async def test_promote_downstream_queues_the_current_freight_in_each_downstream_stage(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer
) -> None:
    freight = freight_for("1.29.3")
    await apply_project(client, with_freight(quickstart_up_to_push(gitops_repo), freight))
    await promote_in_stage(client, PROJECT, "test", freight.alias or "", "dev")

    async def verified_in_test() -> bool:
        states = {s.name: s for s in await stage_states(client, PROJECT)}
        current = states["test"].current
        return current is not None and current.verified

    await wait_for(verified_in_test, timeout=60)
    async with httpx.AsyncClient(base_url=ui.url) as http:
        await login(http, "victor")
        page = await http.get(f"/projects/{PROJECT}/stages/test")
        assert 'id="downstream-form"' not in page.text  # a viewer sees no actions
        refused = await http.post(
            f"/projects/{PROJECT}/stages/test/promote-downstream", data={"csrf": _csrf(page.text)}
        )
        assert refused.status_code == 403 and "this needs a promoter" in refused.text
    async with httpx.AsyncClient(base_url=ui.url) as http:
        await login(http, "bob")
        page = await http.get(f"/projects/{PROJECT}/stages/test")
        assert f"promote {freight.alias} downstream (uat)" in page.text
        done = await http.post(
            f"/projects/{PROJECT}/stages/test/promote-downstream", data={"csrf": _csrf(page.text)}
        )
        assert done.status_code == 200, done.text
        assert f"{freight.alias} downstream of test, by bob: uat: promotion" in done.text

    async def in_uat() -> bool:
        states = {s.name: s for s in await stage_states(client, PROJECT)}
        current = states["uat"].current
        return current is not None and current.freight == freight.metadata.name

    await wait_for(in_uat, timeout=60)


async def test_abort_from_the_ui_names_the_signed_in_promoter(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer
) -> None:
    freight = freight_for("1.29.4")
    await apply_project(client, with_freight(gated_at_test(gitops_repo), freight))
    ticket = await promote_in_stage(client, PROJECT, "test", freight.alias or "", "dev")
    await wait_for(lambda: _exists(client, ticket.promotion))
    async with httpx.AsyncClient(base_url=ui.url) as http:
        await login(http, "bob")
        page = await http.get(f"/promotions/{ticket.promotion}")
        assert page.status_code == 200
        done = await http.post(
            f"/promotions/{ticket.promotion}/abort",
            data={"csrf": _csrf(page.text), "reason": "wrong build", "user": "mallory"},
        )
        assert done.status_code == 200 and "requested by bob" in done.text, done.text
    handle = client.get_workflow_handle(ticket.promotion, result_type=PromotionResult)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    result = failed.value.cause.details[0]  # type: ignore[attr-defined]
    assert result["abortedBy"] == "bob" and result["message"] == "aborted by bob: wrong build"


async def test_pausing_auto_promotion_in_the_ui_holds_new_freight_until_resumed(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer
) -> None:
    first, second = freight_for("1.29.5"), freight_for("1.29.6")
    resources = quickstart_auto(gitops_repo)
    await apply_project(client, with_freight(resources, first))

    async def test_stage() -> StageState:
        return {s.name: s for s in await stage_states(client, PROJECT)}["test"]

    async def test_holds(freight: Freight) -> bool:
        current = (await test_stage()).current
        return current is not None and current.freight == freight.metadata.name

    await wait_for(lambda: test_holds(first), timeout=60)
    async with httpx.AsyncClient(base_url=ui.url) as http:
        await login(http, "bob")
        page = await http.get(f"/projects/{PROJECT}/stages/test")
        done = await http.post(
            f"/projects/{PROJECT}/stages/test/pause-auto-promotion",
            data={"csrf": _csrf(page.text)},
        )
        assert done.status_code == 200 and "paused by bob" in done.text, done.text
        again = await http.post(
            f"/projects/{PROJECT}/stages/test/pause-auto-promotion",
            data={"csrf": _csrf(page.text)},
        )
        assert again.status_code == 409 and "already paused (by bob)" in again.text
        assert "paused by bob" in (await http.get(f"/projects/{PROJECT}")).text

    # New Freight reaches the Stage and stays a candidate: nothing is queued or run.
    await apply_project(client, with_freight(resources, first, second))

    async def known() -> bool:
        return second.metadata.name in (await test_stage()).available

    await wait_for(known)
    state = await test_stage()
    assert state.running is None and state.queue == [] and state.auto_paused_by == "bob"

    # The CLI resumes it (the same client function): the newest Freight goes in.
    resumed = await freightline_cli(client, "auto-promotion", "test", "-p", PROJECT, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert 'auto-promotion of Stage "test" resumed by' in resumed.stdout
    await wait_for(lambda: test_holds(second), timeout=60)


async def test_browsers_watching_a_project_share_one_look_at_it(
    client: Client, worker: Worker, gitops_repo: Path, ui: UiServer
) -> None:
    await apply_project(client, gated_at_test(gitops_repo))
    events = f"/projects/{PROJECT}/events"
    async with httpx.AsyncClient(base_url=ui.url) as one, httpx.AsyncClient(base_url=ui.url) as two:
        await login(one, "alice")
        await login(two, "victor")
        async with one.stream("GET", events) as first, two.stream("GET", events) as second:
            # Both line iterators stay referenced: a collected one closes its connection.
            readers = [first.aiter_lines(), second.aiter_lines()]
            for stream, lines in zip((first, second), readers, strict=True):
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert await anext(lines) == "event: pipeline"
                assert 'data-node=\\"stage:test\\"' in await anext(lines)
            (watch,) = ui.ui.watches.values()
            assert watch.watchers == 2
    await wait_for(lambda: not ui.ui.watches)


async def test_freightline_ui_serves_until_interrupted(client: Client, tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FREIGHTLINE_UI")}
    env |= {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "FREIGHTLINE_UI_USERS_FILE": str(users_file(tmp_path / "users.yaml")),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "freightline",
        "ui",
        "--address",
        f"127.0.0.1:{port}",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        announced = f"Freightline UI on http://127.0.0.1:{port}"
        async with asyncio.timeout(60):
            while announced not in (line := (await process.stdout.readline()).decode()):
                assert line, "the command ended before it served"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await login(http, "victor")
            assert "Projects" in (await http.get("/")).text
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)
