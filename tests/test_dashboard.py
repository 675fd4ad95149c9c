"""The live dashboard at ``/`` in a real headless browser.

Debian's ``chromium`` (``scripts/install-browser.sh``) driven by Playwright, against two
real ``space-cloud run`` processes on the session's etcd. Playwright's own browser
download is not used. A missing browser fails the run; nothing is skipped.

``DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py`` also saves the
README's screenshot of the page.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests import web
from tests.eventually import eventually
from tests.gateway import ADMIN_PASS, Gateway
from tests.servers.etcd import EtcdServer
from tests.servers.process import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: "Within a second" is the target; the assertion is generous so a loaded CI box passes.
LIVE_WITHIN_MS = 5_000
RESTART_WITHIN_MS = 45_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-browser.sh (Debian's chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def etcd_gateways(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start gateways of one fresh cluster on the session etcd; all stopped at teardown."""
    if not etcd_server.running:
        etcd_server.start()
    cluster_id = f"dash{uuid.uuid4().hex[:10]}"
    started: list[Gateway] = []

    def start(name: str, port: int | None = None, etcd: str | None = None) -> Gateway:
        """``etcd``: other endpoints than the session etcd's (the gateway is not waited for)."""
        gateway = Gateway(
            tmp_path / name,
            node_id=name,
            port=port,
            args=["--store-type", "etcd", "--cluster", cluster_id],
            env={
                **etcd_server.env(),
                **({"ETCD_ENDPOINTS": etcd} if etcd else {}),
                "INSTANCE_TTL_SECONDS": "3",
                "STORE_TIMEOUT_SECONDS": "2",
            },
        )
        started.append(gateway)
        return gateway.start(wait_ready=etcd is None)

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        context.close()


def project(project_id: str, name: str, **modules: object) -> dict:
    return {"id": project_id, "name": name, "secret": f"{project_id}-secret", "modules": modules}


def row(page: Page, table: str, row_id: str):
    return page.locator(f'#{table} tbody tr[data-id="{row_id}"]')


def log_in(page: Page, gateway: Gateway) -> None:
    page.goto(f"{gateway.url}/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-user", "admin")
    page.fill("#login-pass", ADMIN_PASS)
    page.click("#login button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


def test_the_page_is_open_and_holds_no_data(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path).start()
    try:
        gateway.put("private", project("private", "Private"))
        page = web.get(f"{gateway.url}/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "private" not in page.text
        for name, media_type in [("app.js", "text/javascript"), ("app.css", "text/css")]:
            asset = web.get(f"{gateway.url}/static/{name}")
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(media_type)
        for missing in ("/static/index.html.bak", "/static/..%2Fapi%2Fdashboard.py"):
            response = web.get(gateway.url + missing)
            assert response.status_code == 404 and "error" in response.json()
        assert web.get(f"{gateway.url}/v1/config/projects").status_code == 401
        assert "/" in web.get(f"{gateway.url}/openapi.json").json()["paths"]
    finally:
        gateway.stop()


def test_live_dashboard_on_two_instances_through_a_restart(
    browser: Browser, page: Page, etcd_gateways: GatewayFactory, tmp_path: Path
) -> None:
    a, b = etcd_gateways("a"), etcd_gateways("b")
    eventually(lambda: {p["id"] for p in a.peers()} == {"a", "b"}, 20, "a to see both instances")
    shop = b.put("shop", project("shop", "Shop", db={"mongo": {"enabled": True}})).json()
    b.put("blog", project("blog", "Blog", auth={"email": True}, filestore={"local": {}}))

    console: list[ConsoleMessage] = []
    errors: list[str] = []
    page.on("console", lambda message: console.append(message))
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Log in on A's page: both instances and the projects with their revisions.
    log_in(page, a)
    expect(page.locator("#peers tbody tr")).to_have_count(2)
    expect(row(page, "peers", "a")).to_contain_text(a.addr)
    expect(row(page, "peers", "b")).to_contain_text(b.addr)
    expect(row(page, "peers", "a")).to_contain_text("this page")
    expect(row(page, "projects", "shop").locator(".rev")).to_have_text(str(shop["revision"]))
    expect(page.locator("#projects tbody tr")).to_have_count(2)
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('space-cloud.session')).token")
    assert "token" not in page.url

    # A write on B's API shows on A's page within a second.
    started = time.monotonic()
    written = b.put("shop", project("shop", "Shop v2", db={"mongo": {"enabled": True}})).json()
    acknowledged = time.monotonic()
    expect(row(page, "projects", "shop").locator(".rev")).to_have_text(
        str(written["revision"]), timeout=LIVE_WITHIN_MS
    )
    shown = time.monotonic()
    expect(row(page, "projects", "shop").locator(".name")).to_have_text("Shop v2")
    print(
        f"\nB's write shown on A's page {1000 * (shown - started):.0f} ms after the PUT "
        f"was sent ({1000 * (shown - acknowledged):.0f} ms after B acknowledged it)"
    )
    created = b.put("tmp", project("tmp", "Temporary")).json()
    expect(row(page, "projects", "tmp").locator(".rev")).to_have_text(str(created["revision"]))
    with b.client() as client:
        assert client.delete("/v1/config/projects/tmp").status_code == 204
    expect(row(page, "projects", "tmp")).to_have_count(0)
    expect(page.locator("#log")).to_contain_text("project.delete")

    # An edit from a stale revision: the 412 view shows what changed; nothing is overwritten.
    row(page, "projects", "shop").locator("button.edit").click()
    expect(page.locator("#editor-title")).to_have_text("Edit shop")
    expect(page.locator("#editor-base")).to_have_text(f"at revision {written['revision']}")
    mine = json.loads(page.input_value("#doc"))
    mine["name"] = "Edited in the page"
    page.fill("#doc", json.dumps(mine, indent=2))
    theirs = b.put("shop", project("shop", "Changed on B", db={"postgres": {"enabled": True}}))
    meanwhile = theirs.json()["revision"]
    expect(page.locator("#stale")).to_be_visible()  # told live, before saving
    with page.expect_response(lambda r: r.request.method == "PUT") as attempt:
        page.click("#save")
    assert attempt.value.status == 412
    conflict = page.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text(f"the cluster is now at revision {meanwhile}")
    expect(page.locator("#conflict-diff .add", has_text='"Changed on B"')).to_have_count(1)
    expect(page.locator("#conflict-diff .del", has_text='"Shop v2"')).to_have_count(1)
    current = b.get("/v1/config/projects/shop")
    assert current.headers["ETag"] == f'"{meanwhile}"'
    assert current.json()["name"] == "Changed on B"
    # The operator chooses to save over it: a conditional write on the current revision.
    with page.expect_response(lambda r: r.request.method == "PUT") as attempt:
        page.click("#conflict-overwrite")
    assert attempt.value.status == 200
    expect(page.locator("#editor-msg")).to_contain_text("Saved as revision")
    saved = attempt.value.json()["revision"]
    assert b.get("/v1/config/projects/shop", waitRevision=saved).json()["name"] == (
        "Edited in the page"
    )

    # Create and delete a project from the page.
    page.click("#new-project")
    page.fill("#doc", json.dumps(project("fresh", "Fresh", eventing={"enabled": True})))
    page.click("#save")
    expect(page.locator("#editor-title")).to_have_text("Edit fresh")
    fresh = int(page.locator("#editor-base").get_attribute("data-revision") or 0)
    assert b.get("/v1/config/projects/fresh", waitRevision=fresh).json()["name"] == "Fresh"
    delete = row(page, "projects", "fresh").locator("button.delete")
    delete.click()
    delete.click()  # confirm
    expect(row(page, "projects", "fresh")).to_have_count(0)
    eventually(
        lambda: b.get("/v1/config/projects/fresh").status_code == 404,
        10,
        "the page's delete to reach B",
    )

    # Pause the stream, write meanwhile, resume: the missed changes are replayed.
    page.click("#pause")
    expect(page.locator("#conn")).to_have_attribute("data-state", "paused")
    missed = [
        b.put(name, project(name, name.title())).json()["revision"] for name in ("docs", "wiki")
    ]
    a.get("/v1/config/projects", waitRevision=missed[-1])
    page.click("#pause")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(page.locator("#conn")).to_contain_text(
        re.compile(r"resumed from id \d+ \(2 changes replayed\)")
    )
    expect(row(page, "projects", "wiki").locator(".rev")).to_have_text(str(missed[-1]))

    # kill -9 A: the page shows it reconnecting, then catches up on what B wrote meanwhile.
    a.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    down = b.put(
        "shop", project("shop", "Changed while A was down", db={"postgres": {"enabled": True}})
    ).json()["revision"]
    # First A comes back without its store: it answers, but refuses the stream (503) until
    # it has synced. The browser gives up on such an answer; the page keeps trying.
    stuck = etcd_gateways("a", port=a.port, etcd=f"127.0.0.1:{free_port()}")
    expect(page.locator("#conn")).to_contain_text("first sync", timeout=RESTART_WITHIN_MS)
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    stuck.kill()
    restarted = time.monotonic()
    a = etcd_gateways("a", port=a.port)
    expect(page.locator("#conn")).to_have_attribute(
        "data-state", "connected", timeout=RESTART_WITHIN_MS
    )
    expect(page.locator("#conn")).to_contain_text(re.compile(r"resumed from id|fresh snapshot"))
    expect(row(page, "projects", "shop").locator(".name")).to_have_text(
        "Changed while A was down", timeout=RESTART_WITHIN_MS
    )
    expect(row(page, "projects", "shop").locator(".rev")).to_have_text(str(down))
    caught_up = time.monotonic()
    print(f"A restarted and the page caught up {caught_up - restarted:.1f} s after the restart")
    expect(page.locator("#peers tbody tr")).to_have_count(2, timeout=RESTART_WITHIN_MS)
    expect(page.locator("#log")).to_contain_text("stream lost")

    # Still live after the restart.
    after = b.put("blog", project("blog", "Blog v2", auth={"email": True})).json()["revision"]
    expect(row(page, "projects", "blog").locator(".rev")).to_have_text(str(after))

    assert errors == [], errors
    assert not [m.text for m in console if token in m.text], "the token reached the console"
    assert not [m.text for m in console if "Content Security Policy" in m.text]

    # The README's screenshot: the page with data and the editor open.
    row(page, "projects", "shop").locator("button.edit").click()
    expect(page.locator("#editor-title")).to_have_text("Edit shop")
    eventually(
        lambda: page.locator("#peers .badge.lag").count() == 0,
        10,
        "every instance to report the newest revision",
    )
    expect(page.locator("#notice")).to_be_hidden()
    target = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def test_the_tokens_panel_and_a_page_opened_with_a_reader_token(
    browser: Browser, page: Page, etcd_gateways: GatewayFactory
) -> None:
    a, b = etcd_gateways("a"), etcd_gateways("b")
    a.put("shop", project("shop", "Shop"))
    a.put("blog", project("blog", "Blog"))
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    # The admin mints a reader of shop on A's page; the token is shown once.
    log_in(page, a)
    expect(page.locator("#tokens-card")).to_be_visible()
    page.fill("#mint-name", "shop-reader")
    page.select_option("#mint-role", "reader")
    page.fill("#mint-projects", "shop")
    page.click("#mint button[type=submit]")
    expect(page.locator("#minted")).to_be_visible()
    token = page.locator("#minted-token").text_content() or ""
    assert token.startswith("sct_")
    page.click("#copy-token")
    expect(page.locator("#copy-msg")).to_have_text(re.compile("Copied|Selected"))
    (listed,) = a.get("/v1/config/tokens").json()["tokens"]
    expect(row(page, "tokens", listed["id"])).to_contain_text("shop-reader")
    assert token not in page.locator("#tokens").inner_text()
    page.click("#dismiss-token")
    expect(page.locator("#minted")).to_be_hidden()
    assert page.locator("#minted-token").text_content() == ""

    # A page on B opened with the reader token: only shop, nothing to edit, no tokens.
    reader = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    reader.set_default_timeout(10_000)
    reader.on("console", lambda message: console.append(message.text))
    reader.goto(f"{b.url}/")
    reader.fill("#token-input", token)
    reader.click("#token-login button[type=submit]")
    expect(reader.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(reader.locator("#projects tbody tr")).to_have_count(1)
    expect(row(reader, "projects", "shop")).to_be_visible()
    expect(reader.locator("#new-project")).to_be_hidden()
    expect(reader.locator("#tokens-card")).to_be_hidden()
    expect(reader.locator("#projects button.delete")).to_have_count(0)
    expect(reader.locator("#who")).to_contain_text("reader of shop")
    row(reader, "projects", "shop").locator("button.edit").click()
    expect(reader.locator("#editor-title")).to_have_text("View shop")
    expect(reader.locator("#doc")).not_to_be_editable()
    expect(reader.locator("#save")).to_be_hidden()

    # Its projects' changes reach it through its own scoped event stream; others' never do.
    expect(reader.locator("#log .ev-snapshot .kind")).to_have_text("snapshot")
    a.put("blog", project("blog", "Blog v2"))
    a.put("shop", project("shop", "Shop v2"))
    expect(row(reader, "projects", "shop").locator(".name")).to_have_text(
        "Shop v2", timeout=LIVE_WITHIN_MS
    )
    expect(reader.locator("#projects tbody tr")).to_have_count(1)
    expect(reader.locator("#log .ev-put .text")).to_have_text(["shop · Shop v2"])

    # Revoked on A's page: B refuses it, and the reader's page is sent back to the login.
    revoke = row(page, "tokens", listed["id"]).locator("button.revoke")
    revoke.click()
    revoke.click()  # confirm
    expect(row(page, "tokens", listed["id"])).to_have_count(0)
    expect(reader.locator("#login-view")).to_be_visible(timeout=15_000)
    expect(reader.locator("#login-error")).to_contain_text("refused")
    assert not [text for text in console if token in text], "the token reached the console"
    reader.context.close()


def test_versions_diff_and_rollback_guarded_by_if_match(
    page: Page, etcd_gateways: GatewayFactory
) -> None:
    a = etcd_gateways("a")
    first = a.put("shop", project("shop", "Shop v1", db={"mongo": {}})).json()["revision"]
    second = a.put("shop", project("shop", "Shop v2", db={"mongo": {}})).json()["revision"]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, a)
    row(page, "projects", "shop").locator("button.edit").click()
    versions = page.locator("#version-list tbody tr")
    expect(versions).to_have_count(2)
    expect(versions.first).to_contain_text(str(second))
    expect(versions.first).to_contain_text("admin")

    # The diff from the first version to the current document, then a rollback from a
    # revision that is no longer current: the 412 view, nothing written.
    page.locator(f'#version-list tbody tr[data-revision="{first}"]').click()
    expect(page.locator("#version-diff .del", has_text='"Shop v1"')).to_have_count(1)
    expect(page.locator("#version-diff .add", has_text='"Shop v2"')).to_have_count(1)
    meanwhile = a.put("shop", project("shop", "Shop v3")).json()["revision"]
    with page.expect_response(lambda r: r.url.endswith("/rollback")) as attempt:
        page.click("#rollback")
    assert attempt.value.status == 412
    expect(page.locator("#conflict")).to_contain_text(f"the cluster is now at revision {meanwhile}")
    assert a.get("/v1/config/projects/shop").json()["name"] == "Shop v3"

    # Reopened at the current revision, the rollback goes through as a new version.
    page.click("#conflict-take")
    expect(page.locator("#editor-base")).to_have_text(f"at revision {meanwhile}")
    page.locator(f'#version-list tbody tr[data-revision="{first}"]').click()
    with page.expect_response(lambda r: r.url.endswith("/rollback")) as attempt:
        page.click("#rollback")
    assert attempt.value.status == 200
    rolled_back = attempt.value.json()["revision"]
    expect(page.locator("#editor-msg")).to_contain_text(f"now revision {rolled_back}")
    expect(page.locator("#version-list tbody tr")).to_have_count(4)
    assert a.get("/v1/config/projects/shop", waitRevision=rolled_back).json()["name"] == "Shop v1"
    assert errors == [], errors
