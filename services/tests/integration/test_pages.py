"""The buyer page and the operations dashboard in a real browser: Debian's headless Chromium driven
by Playwright (no browser download), against the real API, SSE server, workers and mock gateway.

Covers the stock number following purchases live, Buy (by keyboard) reaching a final order status,
the same Idempotency-Key re-sent after a network error, the dashboard's charts filling during a
short load, and accessibility basics (labels, the Buy button in the Tab order, text contrast).
Screenshots go to test-artifacts/. Skipped, with the reason, where Chromium or Playwright is
missing (CI installs both)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis.asyncio as aioredis

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.tokens import mint
from flashsale.config import Settings
from flashsale.local.embedded import Stores, free_port
from flashsale.testing import ServerThread, buy, create_sale, make_settings

from .test_dashboard import running_sse

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = os.environ.get("FLASHSALE_TEST_CHROMIUM") or shutil.which("chromium") or ""
# This machine's network refuses Chromium's background connections: switch them all off, and the
# sandbox too (the tests run as root in CI, where Chromium's sandbox refuses to start).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 860}

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="Playwright is not installed (it comes with the `test` dependency group)",
    ),
    pytest.mark.skipif(
        not CHROMIUM,
        reason="no Chromium: `apt-get install chromium` (Debian) to run the browser tests",
    ),
]

# Every text of the pages against its background: 4.5:1 (WCAG AA), 3:1 for large text. Returns
# the offenders.
CONTRAST_CHECK = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!text || !el.getClientRects().length || style.visibility === "hidden") continue;
    if (el.closest("svg") || el.closest(".visually-hidden")) continue;
    const [a, b] = [lum(rgb(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}#${el.id} ${ratio.toFixed(2)}`);
  }
  return bad;
}
"""

UNLABELLED = """
() => [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => el.type !== "hidden" && !el.labels.length && !el.getAttribute("aria-label"))
  .map((el) => el.id || el.name)
"""


# --- the stack ------------------------------------------------------------------------------------


@pytest.fixture
def settings(clean: Stores) -> Settings:
    port = free_port()
    return make_settings(clean, sse={"port": port, "url": f"http://127.0.0.1:{port}"})


@pytest.fixture
def sse(settings: Settings) -> Iterator[str]:
    with running_sse(settings) as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    # Playwright gives each launch a fresh temporary profile (--user-data-dir) and removes it.
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Tab:
    """One page in its own browser context, with the page's script errors collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(f"script error: {e}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A refused connection shows as a console error too; only our own failures count here.
        text = str(message.text)
        if message.type == "error" and ("Content Security Policy" in text or "Uncaught" in text):
            self.errors.append(text)

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def tab(browser: Browser, api: ServerThread) -> AsyncIterator[Tab]:
    """Needs the API so that it is closed first: the API's shutdown waits for open streams."""
    del api
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    opened = Tab(await context.new_page())
    try:
        yield opened
    finally:
        await context.close()  # closes its streams before the servers stop
    assert not opened.errors, opened.errors


def token(settings: Settings, user_id: str, *, admin: bool = False) -> str:
    return mint(settings.auth, user_id=user_id, admin=admin)


async def text_of(page: Page, selector: str) -> str:
    return (await page.inner_text(selector)).strip()


async def until(page: Page, predicate: str, arg: Any = None, *, timeout_s: float = 10.0) -> None:
    """Poll `predicate(arg)` in the page from here. Playwright's wait_for_function evaluates its
    predicate with eval() inside the page, which the pages' CSP (rightly) forbids; page.evaluate
    goes through the DevTools protocol instead."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await page.evaluate(predicate, arg):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {predicate} {arg!r}")
        await asyncio.sleep(0.05)


async def wait_text(page: Page, selector: str, expected: str, *, timeout_s: float = 10.0) -> None:
    await until(
        page,
        "([s, t]) => document.querySelector(s)?.textContent.trim() === t",
        [selector, expected],
        timeout_s=timeout_s,
    )


# --- the buyer page -------------------------------------------------------------------------------


@pytest.mark.usefixtures("sse")
async def test_the_stock_number_drops_live_while_others_buy(
    tab: Tab, api: ServerThread, client: httpx.AsyncClient, settings: Settings,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    sale_id = await create_sale(client, admin_headers, stock=20)
    page = tab.page
    await page.goto(f"{api.url}/?sale={sale_id}")
    await wait_text(page, "#remaining", "20")
    await wait_text(page, "#live-state", "Live: stock updates as it sells.")
    assert await text_of(page, "#sale-name") == "Test sneaker"
    assert await text_of(page, "#sale-price") == "€ 49.99"
    assert await page.get_attribute("#sale-state", "data-state") == "open"

    for batch in range(3):
        answers = await asyncio.gather(
            *(buy(client, settings, sale_id, f"u{batch}-{i}", "k") for i in range(4))
        )
        assert [r.status_code for r in answers] == [202] * 4
        await wait_text(page, "#remaining", str(20 - 4 * (batch + 1)))
    assert float(await page.get_attribute("#stock-meter", "value") or -1) == pytest.approx(0.4)
    await tab.shot("buyer-live-stock")


@pytest.mark.usefixtures("sse", "workers")
async def test_register_then_buy_by_keyboard_and_watch_the_order_confirm(
    tab: Tab, api: ServerThread, client: httpx.AsyncClient, settings: Settings,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    sale_id = await create_sale(client, admin_headers, stock=100)
    page = tab.page
    await page.goto(f"{api.url}/?sale={sale_id}")
    await wait_text(page, "#remaining", "100")
    assert await page.get_attribute("#buy", "aria-disabled") == "true"
    assert await text_of(page, "#buy-hint") == "Sign in to buy."

    await page.fill("#email", "ada@example.com")
    await page.fill("#password", "correct horse battery")
    await page.fill("#name", "Ada")
    await page.click("#register")
    await wait_text(page, "#auth-message", "Account created; you are signed in.")
    assert (await text_of(page, "#who")).startswith("Signed in as ")
    assert await page.get_attribute("#buy", "aria-disabled") == "false"

    await page.focus("#buy")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#order[data-status=confirmed]", timeout=15_000)
    assert (await text_of(page, "#order")).startswith("Confirmed: it is yours.")
    await wait_text(page, "#remaining", "99")
    user = (await text_of(page, "#who")).removeprefix("Signed in as ").rstrip(".")
    mine = await client.get(
        "/v1/me/orders", headers={"Authorization": f"Bearer {token(settings, user)}"}
    )
    assert [o["status"] for o in mine.json()["orders"]] == ["confirmed"]
    await page.mouse.move(0, 0)
    await tab.shot("buyer")


@pytest.mark.usefixtures("sse", "workers")
async def test_a_network_error_resends_the_same_idempotency_key(
    tab: Tab, api: ServerThread, client: httpx.AsyncClient, settings: Settings,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    """The first answer is lost after the server reserved the unit: the page retries with the
    same key, gets the first answer replayed, and the buyer holds one unit, not two."""
    from playwright.async_api import Route

    sale_id = await create_sale(client, admin_headers, stock=10, per_user_limit=5)
    page = tab.page
    keys_sent: list[str] = []

    async def lose_first_answer(route: Route) -> None:
        keys_sent.append(route.request.headers["idempotency-key"])
        if len(keys_sent) == 1:
            await route.fetch()  # the server takes the order ...
            await route.abort("connectionreset")  # ... and its answer never arrives
        else:
            await route.continue_()

    await page.route("**/v1/sales/*/orders", lose_first_answer)
    await page.goto(f"{api.url}/?sale={sale_id}#token={token(settings, 'net-user')}")
    await wait_text(page, "#remaining", "10")
    await page.click("#buy")
    await page.wait_for_selector("#order[data-status=confirmed]", timeout=15_000)
    assert len(keys_sent) == 2
    assert keys_sent[0] == keys_sent[1]
    assert keys_sent[0].startswith("web-")
    assert len(keys_sent[0]) == 36
    await wait_text(page, "#remaining", "9")
    redis = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        assert await redis.hget(keys.holds(sale_id), "net-user") == "1"
    finally:
        await redis.aclose()
    # The token came in the URL fragment and is gone from the address bar.
    assert "#" not in page.url


async def test_labels_keyboard_and_contrast(
    tab: Tab, api: ServerThread, client: httpx.AsyncClient, settings: Settings,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    sale_id = await create_sale(client, admin_headers, stock=5, opens_in_s=3600)
    page = tab.page
    await page.goto(f"{api.url}/?sale={sale_id}#token={token(settings, 'keys-user')}")
    await wait_text(page, "#remaining", "5")
    assert re.fullmatch(r"Opens in (00:59:\d\d|01:00:00)", await text_of(page, "#countdown"))
    assert await page.evaluate(UNLABELLED) == []
    assert await page.evaluate("document.getElementById('buy').tagName") == "BUTTON"
    # Tab from the top of the page reaches Buy, even while it cannot act yet (aria-disabled).
    reached = False
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "buy":
            reached = True
            break
    assert reached, "Buy is not in the Tab order"
    assert await text_of(page, "#buy-hint") == "The sale has not opened yet."
    assert await page.evaluate(CONTRAST_CHECK) == []

    await page.goto(f"{api.url}/dashboard")
    await page.wait_for_selector("body[data-ready=true]")
    assert await page.evaluate(UNLABELLED) == []
    assert await page.evaluate(CONTRAST_CHECK) == []
    figures = await page.eval_on_selector_all(
        "figure.chart", "fs => fs.map(f => f.querySelector('svg[role=img]')?.ariaLabel)"
    )
    assert len(figures) == 7
    assert all(figures)


# --- the dashboard --------------------------------------------------------------------------------

CHARTS = ["purchases", "latency", "stock", "orders", "lag", "payments", "sse"]


@pytest.mark.usefixtures("workers", "sse")
async def test_the_dashboard_charts_fill_during_a_short_load(
    browser: Browser, tab: Tab, api: ServerThread, client: httpx.AsyncClient,
    settings: Settings, admin_headers: dict[str, str],
) -> None:  # fmt: skip
    sale_id = await create_sale(client, admin_headers, stock=150)
    page = tab.page
    await page.goto(f"{api.url}/dashboard#token={token(settings, 'ops', admin=True)}")
    await until(page, "() => Number(document.body.dataset.events || 0) >= 1")
    # A buyer watching the sale: the SSE chart has a client to count.
    watcher = await browser.new_context()
    try:
        buyer = await watcher.new_page()
        await buyer.goto(f"{api.url}/?sale={sale_id}")
        await wait_text(buyer, "#remaining", "150")

        async def crowd(second: int) -> None:
            await asyncio.gather(
                *(buy(client, settings, sale_id, f"c{second}-{i}", "k") for i in range(60))
            )

        for second in range(4):  # 240 buyers over ~4 s for 150 units: sales and sold-outs
            await asyncio.gather(crowd(second), asyncio.sleep(1.0))
        await until(
            page,
            """(names) => names.every(
                (n) => Number(document.getElementById(`chart-${n}`).dataset.points) >= 3)""",
            CHARTS,
            timeout_s=15,
        )
        await wait_text(page, "#tile-remaining", "0")
        await wait_text(page, "#sales-body th", sale_id)
    finally:
        await watcher.close()
    # A new outcome shows from the beacon's second beat after its first occurrence.
    await until(
        page,
        """() => ["reserved", "sold out"].every(
            (o) => document.querySelector("#chart-purchases .legend").textContent.includes(o))""",
    )
    assert "p99" in await page.inner_text("#chart-latency .legend")
    assert (await text_of(page, "#conn-state")).startswith("Live: ")
    await page.mouse.move(0, 0)
    await tab.shot("dashboard")


async def test_the_dashboard_refuses_a_buyer_token(
    tab: Tab, api: ServerThread, settings: Settings
) -> None:
    page = tab.page
    await page.goto(f"{api.url}/dashboard")
    await page.fill("#admin-token", token(settings, "not-an-admin"))
    await page.click("button[type=submit]")
    await page.wait_for_selector("#conn-state[data-tone=bad]", timeout=10_000)
    assert (await text_of(page, "#conn-state")).startswith("Refused")


@pytest.mark.usefixtures("sse", "workers")
async def test_with_the_waiting_room_on_buy_joins_the_line_then_buys_with_the_pass(
    tab: Tab, api: ServerThread, client: httpx.AsyncClient, settings: Settings,
    admin_headers: dict[str, str],
) -> None:  # fmt: skip
    sale_id = await create_sale(
        client, admin_headers, stock=5, name="Queued sneaker",
        waiting_room={"enabled": True, "admit_per_second": 50},
    )  # fmt: skip
    page = tab.page
    await page.goto(f"{api.url}/?sale={sale_id}#token={token(settings, 'queued-user')}")
    await wait_text(page, "#buy", "Join the line")
    await page.click("#buy")
    await until(page, "() => document.getElementById('queue').dataset.tone === 'good'")
    await wait_text(page, "#buy", "Buy now")
    await page.click("#buy")
    await page.wait_for_selector("#order[data-status=confirmed]", timeout=15_000)
    await tab.shot("buyer-waiting-room")
