"""
The admin page in a real browser: Debian's headless Chromium, driven with
Selenium through Debian's chromedriver (no driver is downloaded).  Load the
page, click restart, see the generation change; then shut down from it.

Skipped, saying why, where Chromium, chromedriver or Selenium is missing;
.ci/run installs Chromium and chromedriver, and the test extra Selenium.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import (
    WAIT,
    ServerProcess,
    admin_token,
    answers,
    free_port,
    pid_of,
    process_alive,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-token-51d2"

PROGRAM = """
import os, sys
import graceful as g

s = g.server()
s.route("/pid", lambda request: f"{os.getpid()}\\n")
s.set_host("127.0.0.1")
s.set_port(int(sys.argv[1]))
s.enable_admin("/debug/admin", token=os.environ.get("ADMIN_TEST_TOKEN") or None)
g.set_ready_timeout(10)
s.run()
"""


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install {package} (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install '.[test]'"
    return None


class AdminPageInBrowserTests(TestCase):
    def setUp(self) -> None:
        missing = _missing()
        if missing:
            raise SkipTest(missing)
        self.directory = Path(tempfile.mkdtemp(prefix="graceful-browser-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    def browser(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        options = Options()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1100,900",
            f"--user-data-dir={self.directory / 'chromium-profile'}",
        ):
            options.add_argument(flag)
        service = Service(CHROMEDRIVER, log_output=str(self.directory / "chromedriver.log"))
        driver = webdriver.Chrome(service=service, options=options)
        self.addCleanup(driver.quit)
        driver.set_page_load_timeout(WAIT)
        return driver

    def serve(self, token: str | None = None) -> tuple[ServerProcess, int]:
        script = self.directory / "admin_page_program.py"
        script.write_text(PROGRAM)
        port = free_port()
        proc = ServerProcess.python(script, str(port))
        if token:
            proc.env["ADMIN_TEST_TOKEN"] = token
        self.addCleanup(proc.stop)
        proc.start()
        wait_until(lambda: answers(port, "/pid"), what="the server to start")
        return proc, port

    def wait_for_text(self, driver: Any, css: str, wanted: str) -> None:
        """
        Wait until the element C{css} selects shows C{wanted}.
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(_: Any) -> bool:
            # The page reloads itself while a restart runs: an element may
            # go stale between finding and reading it.
            try:
                return wanted in driver.find_element("css selector", css).text
            except WebDriverException:
                return False

        WebDriverWait(driver, WAIT, poll_frequency=0.1).until(
            shown, f"{css} to show {wanted!r}; the page shows: {driver.page_source[:2000]}"
        )

    def test_restart_then_shut_down_from_the_page(self) -> None:
        """
        Open the page's signed-in URL, click restart, see the generation change (the page
        follows the restart by itself); then shut down: the button needs the
        confirmation ticked, and the process exits.
        """
        proc, port = self.serve()
        old = proc.remember(pid_of(port))
        driver = self.browser()
        # The URL graceful logs when it makes the token: the page signs in
        # (a cookie) and drops the token from the address bar.
        driver.get(f"http://127.0.0.1:{port}/debug/admin/?token={admin_token(proc)}")
        self.assertEqual(driver.find_element("id", "generation").text, "1")
        self.assertEqual(driver.find_element("id", "pid").text, str(old))
        self.assertNotIn("token", driver.current_url)
        self.assertIn("graceful", driver.title)

        driver.find_element("id", "restart").click()
        self.wait_for_text(driver, "#generation", "2")
        self.wait_for_text(driver, "#notice", "Restarted: generation 1")
        new = proc.remember(int(driver.find_element("id", "pid").text))
        self.assertNotEqual(new, old)
        self.assertEqual(pid_of(port), new)
        self.assertIn("ok", driver.find_element("id", "last-restart").text)
        proc.wait_gone(old)

        # The restart history table shows the restart: its outcome and the
        # two pids, and the page's own request is not counted in flight.
        driver.refresh()
        rows = driver.find_elements("css selector", "#history tbody tr")
        self.assertEqual(len(rows), 1)
        self.assertIn("ok", rows[0].text)
        self.assertIn(f"{old} → {new}", rows[0].text)
        self.assertTrue(driver.find_element("id", "history").is_displayed())
        self.assertEqual(driver.find_element("id", "in-flight").text, "0")
        screenshot = self.directory / "admin-page.png"
        self.assertTrue(driver.save_screenshot(str(screenshot)))
        self.assertEqual(screenshot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        if os.environ.get("GRACEFUL_KEEP_SCREENSHOT"):
            shutil.copy(screenshot, os.environ["GRACEFUL_KEEP_SCREENSHOT"])

        # Unconfirmed, the form does not go.
        driver.find_element("id", "shutdown").click()
        self.assertEqual(driver.find_element("id", "pid").text, str(new))
        self.assertTrue(process_alive(new))
        driver.find_element("id", "confirm").click()
        driver.find_element("id", "shutdown").click()
        self.wait_for_text(driver, "main", "Shutting down")
        proc.wait_gone(new)

    def test_with_a_token(self) -> None:
        """
        With a token, the browser signs in with it (HTTP Basic: any user
        name, the token as the password) and the forms carry it.
        """
        proc, port = self.serve(token=TOKEN)
        driver = self.browser()
        driver.get(f"http://127.0.0.1:{port}/debug/admin")
        # Asked for credentials (headless Chromium shows no prompt).
        self.assertEqual(driver.find_elements("id", "generation"), [])
        self.assertNotIn(TOKEN, driver.page_source)

        driver.get(f"http://admin:{TOKEN}@127.0.0.1:{port}/debug/admin")
        self.assertEqual(driver.find_element("id", "generation").text, "1")
        hidden = driver.find_elements("css selector", "#restart-form input[name=token]")
        self.assertEqual([h.get_attribute("value") for h in hidden], [TOKEN])
        driver.find_element("id", "restart").click()
        self.wait_for_text(driver, "#generation", "2")
        proc.remember(int(driver.find_element("id", "pid").text))
