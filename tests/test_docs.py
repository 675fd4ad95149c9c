"""``/docs`` renders Swagger UI in a real headless browser with every other host blocked:
its assets come from the gateway itself, under a Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Route, expect, sync_playwright

from app.api.docs import SWAGGER_UI_DIR
from tests import web
from tests.gateway import Gateway
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("docs")).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser.sh", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_docs_render_every_operation_without_other_hosts(
    gateway: Gateway, browser: Browser
) -> None:
    blocked: list[str] = []
    problems: list[str] = []
    own = urlsplit(gateway.url).netloc

    def only_the_gateway(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    context = browser.new_context()
    try:
        context.route("**/*", only_the_gateway)
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(str(error)))
        response = page.goto(f"{gateway.url}/docs")
        assert response is not None and response.ok
        assert "default-src 'none'" in response.headers["content-security-policy"]
        operations = page.locator(".opblock")
        expect(operations.first).to_be_visible(timeout=15_000)
        expect(page.locator(".opblock-tag").first).to_be_visible()
        openapi = web.get(f"{gateway.url}/openapi.json", timeout=5).json()
        expected = {
            (method.upper(), path)
            for path, methods in openapi["paths"].items()
            for method in methods
        }
        rendered = set(
            zip(
                page.locator(".opblock-summary-method").all_inner_texts(),
                [
                    text.replace("\u200b", "")
                    for text in page.locator(".opblock-summary-path").all_inner_texts()
                ],
                strict=True,
            )
        )
        assert rendered == expected
        assert ("GET", "/v1/config/projects/{project}") in rendered
        # An operation opens: Swagger UI is live, not a static shell.
        page.locator(".opblock-get .opblock-summary").first.click()
        expect(page.locator(".opblock-body").first).to_be_visible()
    finally:
        context.close()
    assert blocked == [], blocked
    assert problems == [], problems


def test_docs_assets_are_a_closed_list(gateway: Gateway) -> None:
    with web.client(base_url=gateway.url, timeout=5) as client:
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js", "LICENSE"):
            response = client.get(f"/docs/assets/{name}")
            assert response.status_code == 200, name
            assert response.headers["x-content-type-options"] == "nosniff"
        for name in ("../../cli.py", "swagger-initializer.js", "swagger-editor.js"):
            response = client.get(f"/docs/assets/{name}")
            assert response.status_code == 404, name
            assert set(response.json()) == {"error"}
        assert client.get("/redoc").status_code == 404


def test_licence_of_the_served_assets_is_served_beside_them(gateway: Gateway) -> None:
    licence = web.get(f"{gateway.url}/docs/assets/LICENSE", timeout=5)
    assert "Apache License" in licence.text
    assert (SWAGGER_UI_DIR / "LICENSE").is_file()
