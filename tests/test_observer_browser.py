"""The observer page in a real browser (the OS's headless Chromium, driven by Playwright)
against a real node: the tree is visible, a process's detail opens, a kill from the page
is seen as a restart, and the page renders something (a screenshot that is not blank).

Set LETITCRASH_SCREENSHOT=path to keep the screenshot (the README's is made this way)."""
from __future__ import annotations

import io
import os
import shutil
import tempfile

import pytest
from observer_harness import Cart

from actors import GenServer, Node
from apps import observer
from storage import Store
from supervision import ChildSpec, DynamicFlags, DynamicSupervisor, Supervisor, start_child

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 15_000  # a bound on each wait in the page, never a measurement


class Session(GenServer):
    def init(self, user):
        self.user = user


class Payments(GenServer):
    def handle_cast(self, msg):
        raise RuntimeError(f"card declined: {msg}")


@pytest.fixture
def node_observed():
    data = tempfile.mkdtemp()
    node = Node().start_thread()

    def boot():
        store = Store(os.path.join(data, "store"), node, mode="process")
        node.spawn(Supervisor, [
            ChildSpec("carts", Cart, args=(store, ("cart", 1)), options={"name": "carts"}),
            ChildSpec("payments", Payments, options={"name": "payments"}),
            ChildSpec("sessions", DynamicSupervisor, args=(DynamicFlags(),), options={"name": "sessions"}),
        ], name="shop")
        return store

    store = node.run_from_thread(boot)
    for user in ("ann", "bob", "cy"):
        node.run_from_thread(start_child, node, "sessions", ChildSpec("session", Session, restart="temporary"), user)
    obs = observer.start_from_thread(node, port=0, store=store)  # turns count from here
    for item in range(5):
        node.call_from_thread("carts", f"item-{item}")
    node.cast_from_thread("payments", "order 7")  # a crash, and a restart, before the page opens
    yield node, obs
    obs.stop_from_thread()
    node.stop_thread()
    store.close()
    shutil.rmtree(data, ignore_errors=True)


def test_the_observer_page_shows_the_tree_a_detail_and_a_kill_as_a_restart(node_observed):
    node, obs = node_observed
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(obs.url, timeout=TIMEOUT_MS)
            assert "token=" not in page.url  # taken out of the address bar

            # The tree: the shop supervisor, its children, the dynamic supervisor's sessions.
            payments = page.locator("#tree li[data-id='payments']")
            restarts = payments.locator(".restarts").first
            sync_api.expect(restarts).to_have_text("restarts=1", timeout=TIMEOUT_MS)
            old = payments.get_attribute("data-pid")
            assert old == repr(node.run_from_thread(node.whereis, "payments"))
            assert page.locator("#tree li[data-id='sessions'] li").count() == 3
            sync_api.expect(page.locator("#crashes li").first).to_contain_text("card declined", timeout=TIMEOUT_MS)
            sync_api.expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)

            # The processes, sorted by turns: the cart took five calls.
            page.click("th[data-sort='turns']")
            sync_api.expect(page.locator("#processes tbody tr").first).to_contain_text("carts", timeout=TIMEOUT_MS)

            # One process in detail, from the table.
            page.locator("#processes tbody tr", has_text="carts").first.click()
            detail = page.locator("#detail")
            sync_api.expect(detail).to_be_visible(timeout=TIMEOUT_MS)
            sync_api.expect(detail.locator("dd[data-field='state']")).to_contain_text("item-4", timeout=TIMEOUT_MS)
            sync_api.expect(detail.locator("dd[data-field='links']")).not_to_have_text("none")

            # Kill payments from its detail: its supervisor restarts it, and the page shows it.
            page.click("#d-close")
            payments.locator(".row").first.click()
            sync_api.expect(page.locator("#d-title")).to_have_text(old, timeout=TIMEOUT_MS)
            page.click("#kill")
            sync_api.expect(page.locator("#d-message")).to_contain_text("killed", timeout=TIMEOUT_MS)
            sync_api.expect(restarts).to_have_text("restarts=2", timeout=TIMEOUT_MS)
            new = page.locator("#tree li[data-id='payments']").get_attribute("data-pid")
            assert new != old and new == repr(node.run_from_thread(node.whereis, "payments"))

            # The page as an operator sees it: a live process in detail, the crash reports.
            page.click("#d-close")
            page.locator("#processes tbody tr", has_text="carts").first.click()
            sync_api.expect(detail.locator("dd[data-field='state']")).to_contain_text("item-4", timeout=TIMEOUT_MS)
            assert page.locator("#crashes li").count() == 1  # one crash, however often the stream reconnects
            shot = page.screenshot(full_page=True)
            if os.environ.get("LETITCRASH_SCREENSHOT"):
                with open(os.environ["LETITCRASH_SCREENSHOT"], "wb") as f:
                    f.write(shot)
            assert errors == []
        finally:
            browser.close()
    assert_not_blank(shot)


def assert_not_blank(png: bytes) -> None:
    """Many distinct colours over the page: text, charts and panels were drawn."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 1000 and image.height >= 600
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, f"{len(colours or [])} colours: a blank page?"
    dominant = max(count for count, _ in colours)
    assert dominant < 0.9 * image.width * image.height, "one colour covers the page"
