"""The dashboard (/ui) in a real headless Chromium, against a real control plane process and a
real agent process (filesystem plugin): log in, deploy, watch the timeline reach ready
without reloading, replace, stop, relaunch; a wrong token is refused; no page shows a canary
secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.agent_process import AgentProcess, wait_for
from tests.fixtures.browser import screenshot
from tests.fixtures.controlplane import ControlPlaneServer

pytestmark = pytest.mark.integration

CANARY_ENV = "canary-env-7f3a9c"
CANARY_USER = "canary-user-51be02"
CANARY_SIG = "canary-sig-d84e61"
CANARIES = (CANARY_ENV, CANARY_USER, CANARY_SIG)


@pytest.fixture
def site(control_plane: ControlPlaneServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    env_id, token = control_plane.create_environment("prod")
    agent = AgentProcess(tmp_path, control_plane.url, env_id, token).start()
    try:
        yield control_plane.url, env_id
    finally:
        agent.stop()
        print(f"----- agent log -----\n{agent.log()[-4000:]}")


def _detached(exc: Exception) -> bool:
    """Chromedriver's words for an element whose page is being replaced: a stale reference,
    or, when the element is asked mid-navigation, an "inspector error" saying so."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    return isinstance(exc, StaleElementReferenceException) or (
        isinstance(exc, WebDriverException)
        and "does not belong to the document" in str(exc.msg))


def text(driver: Any, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.ID, element_id).text)
    except NoSuchElementException:
        return ""
    except WebDriverException as exc:
        if _detached(exc):
            return ""
        raise


def navigates(driver: Any, element: Any, *keys: str) -> None:
    """Click `element` (or type `keys` into it) and wait until the next page replaced it."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def replaced(_: Any) -> bool:
        try:
            element.is_enabled()
        except WebDriverException as exc:
            if _detached(exc):
                return True
            raise
        return False

    if keys:
        element.send_keys(*keys)
    else:
        element.click()
    WebDriverWait(driver, 30).until(replaced)


def fill(driver: Any, form_action: str, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    form = driver.find_element(By.CSS_SELECTOR, f"form[action$='{form_action}']")
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    navigates(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def no_canary(driver: Any) -> None:
    source = driver.page_source
    assert not [canary for canary in CANARIES if canary in source], driver.current_url


def test_log_in_deploy_watch_ready_replace_stop(
        browser: Any, site: tuple[str, str], control_plane: ControlPlaneServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, env_id = site
    browser.get(f"{url}/ui")
    assert browser.current_url == f"{url}/ui/login"  # no session: the login page
    navigates(browser, browser.find_element(By.ID, "token"), "adm_not-the-token", Keys.ENTER)
    assert "not valid" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert browser.get_cookies() == []
    screenshot(browser, "login-refused")

    # keyboard only: the token field has the focus; Enter submits
    navigates(browser, browser.switch_to.active_element, control_plane.admin_token, Keys.ENTER)
    assert browser.current_url == f"{url}/ui"
    cookie = browser.get_cookies()[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    def heartbeat_shown() -> bool:
        browser.refresh()
        return "filesystem" in browser.page_source
    wait_for(heartbeat_shown, what="the agent's heartbeat on the environments page", timeout=60)
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{env_id}']]").text
    assert "filesystem" in row and "s ago" in row and "passing" in row
    screenshot(browser, "environments")

    # the spec holds canary secrets: env value, URI user info, signed query
    control_plane.admin.deploy(env_id, {
        "id": "secret", "model": {"id": "m-secret", "uri": f"https://{CANARY_USER}:pw@models."
                                  f"example.com/m.tar.gz?X-Amz-Signature={CANARY_SIG}"},
        "env": {"API_TOKEN": CANARY_ENV}})

    navigates(browser, browser.find_element(By.LINK_TEXT, env_id))
    fill(browser, f"/environments/{env_id}/deploy", deployment_id="iris", model_id="iris-v1",
         model_uri="s3://models/iris/v1/")
    assert browser.current_url.endswith(f"/ui/environments/{env_id}/deployments/iris")
    # no reload from here on: the page updates itself
    # (a heartbeat may show the state before the action's result arrives: watch the timeline)
    wait_for(lambda: "completed passing/ready" in text(browser, "timeline")
             and text(browser, "running") == "no", what="the timeline reaching ready", timeout=60)
    assert "rendered" in text(browser, "timeline")
    assert text(browser, "state") == "ready"
    assert text(browser, "current-model") == "iris-v1"
    assert text(browser, "last-good-model") == "iris-v1"
    assert text(browser, "old-model-in-use") == "no"
    assert "http://models.local/" in text(browser, "prediction-url")
    screenshot(browser, "deployment")

    fill(browser, "/deployments/iris/replace", model_id="iris-v2", model_uri="s3://models/iris/v2/")
    wait_for(lambda: "deployment_replace_model" in text(browser, "timeline")
             and text(browser, "running") == "no", what="the replacement's result", timeout=60)
    assert "model replaced: iris-v1 -> iris-v2" in text(browser, "timeline")
    assert text(browser, "current-model") == "iris-v2"

    navigates(browser, browser.find_element(By.CSS_SELECTOR,
                                            "form[action$='/deployments/iris/stop'] button"))
    wait_for(lambda: text(browser, "state") == "stopped", what="state stopped", timeout=60)
    assert text(browser, "desired") == "stopped"
    # relaunch by keyboard: focus the button, press Enter
    navigates(browser, browser.find_element(
        By.CSS_SELECTOR, "form[action$='/deployments/iris/relaunch'] button"), Keys.ENTER)
    wait_for(lambda: text(browser, "desired") == "running" and text(browser, "state") == "ready"
             and text(browser, "running") == "no", what="relaunched and ready", timeout=60)
    assert "deployment_relaunch" in text(browser, "timeline")
    navigates(browser, browser.find_element(By.CSS_SELECTOR,
                                            "form[action$='/deployments/iris/stop'] button"))
    wait_for(lambda: text(browser, "state") == "stopped", what="stopped again", timeout=60)

    browser.get(f"{url}/ui/environments/{env_id}?state=stopped")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["iris"]
    screenshot(browser, "deployments")

    for page in (f"{url}/ui", f"{url}/ui/environments/{env_id}",
                 f"{url}/ui/environments/{env_id}/deployments/secret"):
        browser.get(page)
        wait_for(lambda: "Timeline" in browser.page_source or "Deployments" in browser.page_source
                 or "Environments" in browser.page_source, what="the page", timeout=60)
        no_canary(browser)
    wait_for(lambda: text(browser, "running") == "no",
             what="the secret deployment's action done", timeout=60)
    browser.refresh()
    no_canary(browser)
    assert "********" in text(browser, "spec")

    # narrow screen (a phone): nothing wider than the viewport
    browser.set_window_size(390, 844)
    browser.get(f"{url}/ui/environments/{env_id}/deployments/iris")
    wide = browser.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
        ".right > window.innerWidth + 1 && !e.closest('.scroll, pre')).map(e => e.tagName + "
        "'#' + e.id + '.' + e.className)")
    assert wide == []
    screenshot(browser, "deployment-narrow")


def test_forms_need_the_session_csrf_token(
        browser: Any, site: tuple[str, str], control_plane: ControlPlaneServer) -> None:
    from selenium.webdriver.common.by import By

    url, env_id = site
    browser.get(f"{url}/ui/login")
    browser.find_element(By.ID, "token").send_keys(control_plane.admin_token)
    navigates(browser, browser.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    cookie = {c["name"]: c["value"] for c in browser.get_cookies()}
    forged = requests.post(f"{url}/ui/environments/{env_id}/deploy", cookies=cookie, timeout=10,
                           data={"deployment_id": "x", "model_id": "m", "model_uri": "s3://b/m"})
    assert forged.status_code == 403
    assert control_plane.admin.list_deployments(env_id) == []
    signed_elsewhere = requests.get(f"{url}/ui", cookies={"mgmt_cp_ui": "e30.forged.sig"},
                                    timeout=10, allow_redirects=False)
    assert signed_elsewhere.status_code == 303
    assert signed_elsewhere.headers["location"] == "/ui/login"

    # a session that ends while a deployment page is open: the page goes to the login
    control_plane.deploy(env_id, "d1", uri="s3://models/m1/")
    browser.get(f"{url}/ui/environments/{env_id}/deployments/d1")
    assert "Timeline" in browser.page_source
    browser.delete_all_cookies()
    wait_for(lambda: browser.current_url == f"{url}/ui/login", what="the login page", timeout=15)


def test_read_only_token_sees_pages_but_no_forms(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    read_file = tmp_path / "read-token"
    read_file.write_text("read-only-token-3c1d\n")
    server = ControlPlaneServer(tmp_path, extra_args=("--read-token-file", str(read_file)))
    server.start()
    try:
        env_id, _ = server.create_environment("staging")
        server.deploy(env_id, "d1", uri="s3://models/m1/")
        browser.get(f"{server.url}/ui/login")
        browser.find_element(By.ID, "token").send_keys("read-only-token-3c1d")
        navigates(browser, browser.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert "signed in (read)" in browser.page_source
        browser.get(f"{server.url}/ui/environments/{env_id}/deployments/d1")
        assert "Timeline" in browser.page_source
        forms = [f.get_attribute("action") for f in browser.find_elements(By.TAG_NAME, "form")]
        assert forms == [f"{server.url}/ui/logout"]  # no deploy/replace/stop/relaunch
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        cookie = {c["name"]: c["value"] for c in browser.get_cookies()}
        stop = requests.post(f"{server.url}/ui/environments/{env_id}/deployments/d1/stop",
                             cookies=cookie, data={"csrf": csrf}, timeout=10)
        assert stop.status_code == 403 and "read-only" in stop.text
        assert server.admin.get_deployment(env_id, "d1")["desired"] == "running"
        api = requests.get(f"{server.url}/api/v1/admin/environments", timeout=10,
                           headers={"Authorization": "Bearer read-only-token-3c1d"})
        assert api.status_code == 401  # the read token is for the dashboard only
    finally:
        server.close()


def test_login_form_body_is_bounded(control_plane: ControlPlaneServer) -> None:
    """The login form is reachable without a session: a huge body is refused, not buffered."""
    answer = requests.post(f"{control_plane.url}/ui/login", data={"token": "x" * 100_000},
                           timeout=10)
    assert answer.status_code == 413
    too_many = requests.post(f"{control_plane.url}/ui/login", timeout=10,
                             data={f"f{i}": "1" for i in range(200)})
    assert too_many.status_code == 413
