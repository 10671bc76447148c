"""Screenshots of Freightline's web UI on a running demo (``scripts/screenshots`` runs it).

``python -m sandbox.demo.ui_screenshots DEMO_OUTPUT OUT_DIR`` reads the web UI's
address and alice's login from the demo's output, signs in with Playwright
driving Debian's chromium, checks that each page shows what it must (a blank
or half-loaded page fails the script instead of landing in ``docs/``), and saves:

- ``ui-pipeline.png``: the project's graph and Stages (prod waiting for approval,
  uat rolled back after the bad image failed verification);
- ``ui-stage.png``: Stage uat: its verifications with each measurement, its history;
- ``ui-freight.png``: the Freight timeline, one Freight's detail open;
- ``ui-promotion.png``: the prod promotion waiting for approval.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

CHROMIUM = "/usr/bin/chromium"


def demo_login(output: str) -> tuple[str, str]:
    """The UI's URL and alice's password, as the demo printed them."""
    found = re.search(r"Freightline UI (http://\S+) · sign in as alice / (\S+) ", output)
    if found is None:
        raise SystemExit("error: the demo's output names no Freightline UI login")
    return found.group(1), found.group(2)


async def take(output: str, out: Path) -> None:
    url, password = demo_login(output)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        context = await browser.new_context(
            base_url=url, viewport={"width": 1440, "height": 900}, device_scale_factor=1
        )
        page = await context.new_page()
        await page.goto("/login")
        if await page.locator("#oidc-sign-in").count():  # the demo's default: OIDC
            await page.click("#oidc-sign-in")
            await page.fill("input[name=username]", "alice")
        else:
            await page.fill("input[name=user]", "alice")
        await page.fill("input[name=password]", password)
        await page.click("button[type=submit]")
        await expect(page.locator("#user")).to_have_text("alice")

        await page.goto("/projects/kargo-demo")
        await expect(page.locator('[data-node="stage:prod"]')).to_contain_text(
            "waiting for approval"
        )
        await expect(page.locator('[data-node="stage:uat"]')).to_contain_text("Healthy")
        await save(page, out / "ui-pipeline.png")
        prod = await page.locator('tr[data-stage="prod"] a[href^="/promotions/"]').get_attribute(
            "href"
        )

        await page.goto("/projects/kargo-demo/stages/uat")
        await expect(page.locator("section", has_text="Verifications")).to_contain_text("Failed")
        await expect(page.locator(".measure").first).to_be_visible()
        await save(page, out / "ui-stage.png")

        await page.goto("/projects/kargo-demo/freight")
        await page.locator("tr[data-freight] summary").first.click()
        await expect(page.locator("td.here").first).to_be_visible()
        await save(page, out / "ui-freight.png")

        if prod is None:
            raise SystemExit("error: the pipeline shows no running prod promotion")
        await page.goto(prod)
        await expect(page.locator("#approval")).to_contain_text("0 of 1 approvals")
        await save(page, out / "ui-promotion.png")
        await browser.close()


async def save(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True)
    print(f"==> {path}", file=sys.stderr)


def main() -> None:
    output, out = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
    asyncio.run(take(output, out))


if __name__ == "__main__":
    main()
