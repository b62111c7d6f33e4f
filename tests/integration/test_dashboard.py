"""The dashboard over a real server process (HTTP, auth on), driven without a browser: sessions, CSRF, roles,
Host/Origin, revocation, the security headers, the probes, and simple mode; then the browser flows, in
the second half of this file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.dashboard_site import (SESSION_SECRET, Site, browser_client, call, close_clients, csrf_of,
                                  dashboard_site, log_in, run_status, waiting_run)
from tests.import_audit import BOOTSTRAP, OPTIONAL_IMPORTS, foreign_modules, read_audit, requirement_closure
from tests.secure_serving import keys_cli, make_key
from tests.serving import free_port, server_env, wait_for_port

PAGES = ("/dashboard", "/dashboard?window=7d", "/dashboard/providers", "/dashboard/runs", "/dashboard/incidents",
         "/dashboard/patterns")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with dashboard_site(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(autouse=True)
def closed_clients() -> Iterator[None]:
    yield
    close_clients()


def test_without_a_session_every_page_leads_to_the_login_form(site: Site) -> None:
    run_id = waiting_run(site)
    anonymous = browser_client(site)
    for path in (*PAGES, f"/dashboard/runs/{run_id}"):
        reply = anonymous.get(path)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/dashboard/login?next=/dashboard"), path
    assert anonymous.get("/dashboard/overview/live").status_code == 401  # a live region asks for a reload
    refused = anonymous.post(f"/dashboard/runs/{run_id}/decision", data={"decision": "approve", "csrf": "x"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/dashboard/login")
    assert run_status(site, run_id) == "waiting"
    form = anonymous.get(anonymous.get("/dashboard").headers["location"])
    assert form.status_code == 200 and 'id="login-form"' in form.text and 'type="password"' in form.text
    assert "HttpOnly" in form.headers["set-cookie"] and "SameSite=strict" in form.headers["set-cookie"]


def test_a_key_logs_in_with_a_strict_http_only_cookie_and_a_wrong_key_does_not(site: Site) -> None:
    client = browser_client(site)
    token = csrf_of(client.get("/dashboard/login").text)
    wrong = client.post("/dashboard/login", data={"key": "aiom_000000000000_" + "A" * 43, "csrf": token})
    assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
    assert "aiom_000000000000" not in wrong.text and "aiom_dashboard=" not in wrong.headers.get("set-cookie", "")
    no_token = browser_client(site)
    no_token.get("/dashboard/login")
    assert no_token.post("/dashboard/login", data={"key": site.user}).status_code == 403
    token = csrf_of(client.get("/dashboard/login").text)
    reply = client.post("/dashboard/login", data={"key": site.user, "csrf": token, "next": "https://evil.example/"})
    assert reply.status_code == 303 and reply.headers["location"] == "/dashboard"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("aiom_dashboard="))
    assert {"HttpOnly", "SameSite=strict", "Path=/dashboard", "Max-Age=28800"} <= {p.strip() for p in cookie.split(";")}
    assert site.user not in cookie and site.user.split("_", 2)[2] not in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and f"key:{site.user.split('_')[1]}" in page.text


def test_a_user_sees_only_their_runs_and_their_cookie_cannot_approve(site: Site) -> None:
    own, others = waiting_run(site), waiting_run(site, site.admin)
    user = log_in(site, site.user)
    listing = user.get("/dashboard/runs").text
    assert own in listing and others not in listing
    assert user.get(f"/dashboard/runs/{others}").status_code == 404
    page = user.get(f"/dashboard/runs/{own}")
    assert 'id="waiting-note"' in page.text and 'class="decision"' not in page.text
    refused = user.post(f"/dashboard/runs/{own}/decision", data={"decision": "approve", "csrf": csrf_of(page.text),
                                                                 "step": "gate"})
    assert refused.status_code == 403 and "needs role admin" in refused.text
    assert run_status(site, own) == "waiting"
    incident = call(site, site.admin, "monitor_operations", window="15m")["incidents"][0]["id"]
    refused = user.post(f"/dashboard/incidents/{incident}/acknowledge", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 403
    assert call(site, site.admin, "monitor_operations", window="15m")["incidents"][0]["status"] == "open"
    admin = log_in(site, site.admin)
    assert own in admin.get("/dashboard/runs").text and others in admin.get("/dashboard/runs").text


def test_a_missing_wrong_or_foreign_csrf_token_is_refused(site: Site) -> None:
    run_id = waiting_run(site)
    admin, user = log_in(site, site.admin), log_in(site, site.user)
    page = admin.get(f"/dashboard/runs/{run_id}").text
    assert 'class="decision"' in page
    token, users_token = csrf_of(page), csrf_of(user.get("/dashboard").text)
    for data in ({"decision": "approve"}, {"decision": "approve", "csrf": ""},
                 {"decision": "approve", "csrf": token[:-2] + "xx"}, {"decision": "approve", "csrf": users_token}):
        reply = admin.post(f"/dashboard/runs/{run_id}/decision", data=data)
        assert reply.status_code == 403 and "CSRF" in reply.text, data
    assert admin.post("/dashboard/logout", data={"csrf": ""}).status_code == 403
    assert run_status(site, run_id) == "waiting"
    unknown = admin.post(f"/dashboard/runs/{run_id}/decision", data={"decision": "approve", "csrf": token, "by": "x"})
    assert unknown.status_code == 400 and "unknown form field" in unknown.text
    large = admin.post(f"/dashboard/runs/{run_id}/decision",
                       data={"decision": "approve", "csrf": token, "comment": "x" * 20_000})
    assert large.status_code == 413
    assert run_status(site, run_id) == "waiting"
    approved = admin.post(f"/dashboard/runs/{run_id}/decision", data={"decision": "approve", "csrf": token})
    assert approved.status_code == 303 and approved.headers["location"].endswith("?done=approved")


def test_a_foreign_origin_or_host_is_refused_before_anything_runs(site: Site) -> None:
    run_id = waiting_run(site)
    admin = log_in(site, site.admin)
    token = csrf_of(admin.get(f"/dashboard/runs/{run_id}").text)
    foreign = admin.post(f"/dashboard/runs/{run_id}/decision", data={"decision": "approve", "csrf": token},
                         headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert admin.get("/dashboard", headers={"Host": "evil.example"}).status_code == 421
    login = browser_client(site)
    token_for_login = csrf_of(login.get("/dashboard/login").text)
    assert login.post("/dashboard/login", data={"key": site.admin, "csrf": token_for_login},
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert run_status(site, run_id) == "waiting"


def test_a_session_ends_on_the_first_request_after_its_key_is_revoked(site: Site) -> None:
    key = make_key(site.config, site.database, "temporary")
    client = log_in(site, key)
    assert client.get("/dashboard").status_code == 200
    assert keys_cli(site.config, site.database, "revoke", key.split("_")[1]).returncode == 0
    again = client.get("/dashboard")  # [auth] key_cache_s = 0 here: the next request looks the key up
    assert again.status_code == 303 and again.headers["location"].startswith("/dashboard/login")
    assert client.get("/dashboard/overview/live").status_code == 401


def test_pages_carry_a_strict_policy_no_inline_script_and_no_secret(site: Site) -> None:
    run_id = waiting_run(site)
    admin = log_in(site, site.admin)
    for path in (*PAGES, f"/dashboard/runs/{run_id}", f"/dashboard/runs/{run_id}/live", "/dashboard/overview/live"):
        reply = admin.get(path)
        assert reply.status_code == 200, path
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
        assert reply.headers["x-frame-options"] == "DENY" and reply.headers["cache-control"] == "no-store"
        html = reply.text
        assert not re.search(r"<script(?![^>]*\ssrc=)", html), path  # every script is a file
        assert not re.search(r"\son[a-z]+=|\sstyle=", html), path  # no inline handlers or styles
        for secret in (SESSION_SECRET, site.admin, site.user):
            assert secret not in html, path
    assert admin.get("/dashboard?window=2h").status_code == 400
    assert admin.get("/dashboard/runs?status=bogus").status_code == 400
    assert admin.get("/dashboard/runs/run-does-not-exist").status_code == 404


def test_health_and_ready_answer_without_details_or_authentication(site: Site) -> None:
    for path, body in (("/health", "ok\n"), ("/ready", "ready\n")):
        reply = httpx2.get(site.base + path, headers={"Host": "10.0.0.5:8000"}, timeout=10)  # probed by address
        assert (reply.status_code, reply.text) == (200, body)
    assert httpx2.get(site.base + "/", timeout=10).headers["location"] == "/dashboard"
    assert httpx2.get(site.base + "/mcp", timeout=10).status_code == 401  # the MCP endpoint is unchanged


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The server (``args`` after the script) on a free port over loopback; yields its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BOOTSTRAP, *args, "--port", str(port), "--database",
                                str(tmp_path / "state.db")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**server_env(), **(env or {})})
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_simple_mode_serves_the_probes_and_says_the_dashboard_needs_full_mode(tmp_path: Path) -> None:
    audit = tmp_path / "imports.json"
    with serving(tmp_path, "--simple", "--transport", "http", env={"IMPORT_AUDIT_FILE": str(audit)}) as base:
        page = httpx2.get(base + "/dashboard/runs", timeout=10)
        assert page.status_code == 501 and "needs full mode" in page.text
        assert httpx2.get(base + "/health", timeout=10).text == "ok\n"
        assert httpx2.get(base + "/ready", timeout=10).status_code == 200
        assert httpx2.get(base + "/dashboard", headers={"Host": "evil.example"}, timeout=10).status_code == 421
    modules = read_audit(audit)
    assert "server.app.dashboard.mount" in modules and "server.app.dashboard.web" not in modules
    assert "jinja2" not in modules and "itsdangerous" not in modules
    allowed = requirement_closure("mcp") | {"ai-orchestration-mcp"} | set(OPTIONAL_IMPORTS)
    assert foreign_modules(modules, allowed) == {}, json.dumps(foreign_modules(modules, allowed))[:500]


def test_over_sse_without_auth_the_dashboard_serves_the_local_user_and_still_wants_csrf(tmp_path: Path) -> None:
    with serving(tmp_path, "--transport", "sse", env={"IMPORT_AUDIT_FILE": str(tmp_path / "imports.json")}) as base:
        with httpx2.Client(base_url=base, headers={"Origin": base}, timeout=30) as local:
            page = local.get("/dashboard/runs")  # no login on a server without authentication, as on /sse
            assert page.status_code == 200 and 'id="role">admin' in page.text and 'id="runs"' in page.text
            assert "aiom_dashboard=" in page.headers["set-cookie"]
            assert local.get("/dashboard/login", follow_redirects=False).headers["location"] == "/dashboard"
            refused = local.post("/dashboard/incidents/inc-000000000000/acknowledge", data={"note": "x"})
            assert refused.status_code == 403 and "CSRF" in refused.text
            missing = local.post("/dashboard/incidents/inc-000000000000/acknowledge",
                                 data={"csrf": csrf_of(local.get("/dashboard/incidents").text)})
            assert missing.status_code == 404 and "no incident" in missing.text
        with httpx2.stream("GET", base + "/sse", timeout=10) as stream:  # the SSE transport beside it, unchanged
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")


# -- in a real browser (headless Chromium from Debian's packages, driven by Selenium through chromedriver) ----------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,960")
REPOSITORY = Path(__file__).resolve().parents[2]
README_SHOTS = REPOSITORY / "docs" / "screenshots"
ARTIFACTS_ENV = "DASHBOARD_ARTIFACTS"
"""Where the screenshots go (default ``test-artifacts/dashboard/`` under the repository), one folder per test."""


def artifacts_dir() -> Path:
    return Path(os.environ.get(ARTIFACTS_ENV) or REPOSITORY / "test-artifacts" / "dashboard")


class Browser:
    """One Chromium with a new empty profile. Each page it shows is to be saved as ``<name>.png`` under ``shots``:
    it notes every address it arrives at (by :meth:`open`, or when a :meth:`wait` ends) and each one a shot was
    taken at, and :meth:`unshot_pages` lists the pages shown without a shot."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots
        self.visited: list[str] = []
        self.shot_at: set[str] = set()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.visited.append(self.driver.current_url)  # after redirects: the page shown

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition: Any, what: str, timeout_s: float = 20) -> Any:
        """Poll ``condition`` until truthy; an element a live update replaced meanwhile is looked up again."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        found = WebDriverWait(self.driver, timeout_s, poll_frequency=0.2, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(
            lambda _: condition(), message=f"no {what} within {timeout_s} s")
        self.visited.append(self.driver.current_url)  # a click or a form may have led to another page
        return found

    def shot(self, name: str, *, readme: bool = False) -> Path:
        """Save the page as ``<name>.png`` (with ``readme`` and ``UPDATE_README_SCREENSHOTS`` set, into
        ``docs/screenshots/`` too)."""
        path = self.shots / f"{name}.png"
        assert not path.exists(), f"a second screenshot named {name}"
        assert self.driver.save_screenshot(str(path)), name
        assert path.stat().st_size > 0, name
        self.shot_at.add(self.driver.current_url)
        if readme and os.environ.get("UPDATE_README_SCREENSHOTS"):
            README_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, README_SHOTS / path.name)
        return path

    def unshot_pages(self) -> list[str]:
        """The addresses shown without a screenshot taken there."""
        return [url for url in dict.fromkeys(self.visited) if url not in self.shot_at]

    def log_in(self, key: str) -> None:
        self.open("/dashboard")
        self.wait(lambda: self.all("#login-form"), "login form")
        self.shot("login-form")  # before the key is typed
        self.find("#key").send_keys(key)
        self.find("#login-submit").click()
        self.wait(lambda: self.all("#principal"), "page after login")

    def mark_document(self) -> None:
        """Tag the loaded document, so a later check can tell it was updated in place, not reloaded."""
        self.driver.execute_script("document.documentElement.dataset.testMark = 'kept';")

    def same_document(self) -> bool:
        return self.driver.execute_script("return document.documentElement.dataset.testMark") == "kept"


@pytest.fixture
def browser(site: Site, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = "Chromium is not installed (scripts/install-chromium.sh: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    # A driver path of our own: Selenium Manager is never asked to find (or download) one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    shots = artifacts_dir() / request.node.name  # kept after the run: the test's artifacts
    shutil.rmtree(shots, ignore_errors=True)  # no shot left from an earlier run
    shots.mkdir(parents=True)
    try:
        yield Browser(driver, site.base, shots)
    finally:
        driver.quit()


def test_a_user_sees_the_charts_and_a_runs_dag_updating_in_place(site: Site, browser: Browser) -> None:
    run_id = waiting_run(site)
    browser.log_in(site.user)
    assert browser.find("#role").text == "user"
    calls = browser.find("#chart-calls")
    assert "chart-empty" not in calls.get_attribute("class") and browser.all("#chart-calls rect.bar")
    assert browser.all("#chart-p95 polyline.series") and browser.all("#chart-cost rect.bar")
    assert int(browser.find("#total-calls").text.replace(",", "")) >= 6
    browser.shot("overview", readme=True)
    before = int(browser.find("#total-calls").text.replace(",", ""))
    browser.mark_document()
    for index in range(2):
        call(site, site.user, "orchestrate", prompt=f"live {index}")
    browser.wait(lambda: int(browser.find("#total-calls").text.replace(",", "")) > before, "live update of the calls")
    assert browser.same_document()

    browser.open("/dashboard/providers")
    assert {r.get_attribute("data-provider") for r in browser.all("#providers tbody tr")} == {"flaky", "steady"}
    browser.shot("providers")
    browser.open("/dashboard/runs")
    assert browser.all(f'#runs tr[data-run="{run_id}"]')
    browser.shot("runs")
    browser.find(f'tr[data-run="{run_id}"] a').click()
    browser.wait(lambda: browser.all("#dag"), "the run's DAG")
    nodes = {n.get_attribute("data-step"): n.get_attribute("data-status") for n in browser.all("#dag g.node")}
    assert nodes == {"draft": "completed", "review": "completed", "gate": "waiting", "publish": "pending"}
    assert len(browser.all("#dag path.edge")) == 3 and browser.all("#waiting-note") and not browser.all(".decision")
    browser.shot("run", readme=True)
    browser.open("/dashboard/incidents")
    assert browser.all('#active-incidents tr[data-status="open"]') and not browser.all("form.acknowledge")
    browser.shot("incidents")
    browser.open("/dashboard/patterns")
    assert browser.all('#patterns tr[data-pattern="code-review"]')
    agents = {row.get_attribute("data-agent"): tuple(cell.text for cell in row.find_elements("css selector", "td")[1:3])
              for row in browser.all("#agents tbody tr[data-agent]")}
    assert agents == {"reviewer": ("1", "config"), "summarizer": ("2", "registered")}  # name, version, source
    assert "Summarises runs and incidents" in browser.find('#agents tr[data-agent="summarizer"]').text  # version 2's
    assert not browser.all("#no-agents") and not browser.all("#agents-note")
    browser.shot("patterns")
    browser.find("form.inline button").click()  # log out
    browser.wait(lambda: browser.all("#login-form"), "the login form after logging out")
    browser.shot("login")
    assert browser.driver.get_log("browser") == []  # no CSP violation, no failed request, no script error
    assert browser.unshot_pages() == []
    assert {p.name for p in browser.shots.iterdir()} == {f"{name}.png" for name in (
        "login-form", "overview", "providers", "runs", "run", "incidents", "patterns", "login")}


def test_an_admin_approves_a_run_and_acknowledges_an_incident(site: Site, browser: Browser) -> None:
    approved, rejected = waiting_run(site), waiting_run(site)
    browser.log_in(site.admin)
    assert browser.find("#role").text == "admin"
    browser.shot("overview")
    browser.open(f"/dashboard/runs/{rejected}")
    browser.wait(lambda: browser.all(".decision"), "the approval form")
    browser.shot("run-awaiting-decision")
    browser.mark_document()
    call(site, site.admin, "workflow_run", run_id=rejected, action="reject", comment="not now")
    browser.wait(lambda: browser.find("#run-status").text == "failed", "the run page updating to failed")
    assert browser.same_document() and not browser.all(".decision")
    browser.shot("run-rejected")

    browser.open(f"/dashboard/runs/{approved}")
    browser.wait(lambda: browser.all(".decision"), "the approval form")
    browser.shot("run-approval-form")
    field = '.decision[data-step="gate"] input[name="comment"]'
    browser.wait(lambda: browser.find(field).click() or True, "focus in the comment field")
    browser.find(field).send_keys("ship it")  # with focus inside the live region, updates wait until it leaves
    browser.find('.decision[data-step="gate"] button.approve').click()
    browser.wait(lambda: browser.all("#decision-flash"), "the decision notice")
    browser.wait(lambda: browser.find("#run-status").text == "completed", "the approved run to complete")
    assert browser.find('#dag g.node[data-step="gate"]').get_attribute("data-status") == "completed"
    browser.shot("run-approved")
    assert run_status(site, approved) == "completed"

    browser.open("/dashboard/incidents")
    row = browser.find('#active-incidents tr[data-status="open"]')
    assert row.find_elements("css selector", "form.acknowledge")  # an admin's row carries the form
    browser.shot("incidents")
    incident = row.get_attribute("data-incident")
    row.find_element("css selector", 'input[name="note"]').send_keys("looking into the 503s")
    row.find_element("css selector", "button").click()
    browser.wait(lambda: browser.all(f'#active-incidents tr[data-incident="{incident}"][data-status="acknowledged"]'),
                 "the acknowledged incident")
    assert "looking into the 503s" in browser.find(f'#active-incidents tr[data-incident="{incident}"]').text
    browser.shot("incidents-acknowledged")
    stored = next(i for i in call(site, site.admin, "monitor_operations", window="15m")["incidents"]
                  if i["id"] == incident)
    assert stored["status"] == "acknowledged" and stored["acknowledged_by"] == f"key:{site.admin.split('_')[1]}"
    assert browser.driver.get_log("browser") == []
    assert browser.unshot_pages() == []
