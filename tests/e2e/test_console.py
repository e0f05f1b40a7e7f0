"""The operator console in a real headless Chromium (Debian's, driven by its chromedriver through Selenium).

The five services run as processes on the local stack. The test signs in with an admin token, finds a request
it made, opens it (timeline, datasets with the legal reference of what was kept, receipt link), places and
releases a legal hold through the forms, and reads the health page. No page may show an email address.
"""

import asyncio
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from shared.auth import AUDIT_READ, DELETION_ANY, RETENTION_ADMIN, WEBHOOKS_ADMIN
from shared.mongo import create_mongo_client
from shared.settings import MongoSettings
from tests.pipeline import Api, Pipeline, Servers, WebhookReceiver, token

pytestmark = pytest.mark.integration
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    servers = Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher)
    p = Pipeline(servers, tmp_path_factory.mktemp("console"))
    try:
        asyncio.run(p.start())
        yield p
    finally:
        p.stop()

        async def drop() -> None:
            client = create_mongo_client(MongoSettings(url=mongo_url))
            await client.drop_database(p.database)
            await client.close()

        asyncio.run(drop())


def a_partial_deletion(p: Pipeline) -> tuple[str, str]:
    """A seeded person deleted through intake; the shipped tax rule keeps their invoices."""
    prefix = f"console-{uuid.uuid4().hex[:6]}"
    seeded = p.cli("seed", "--users", "1", "--prefix", prefix)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    subject = f"{prefix}-000001"

    async def run() -> str:
        async with aiohttp.ClientSession() as http, WebhookReceiver() as receiver:
            api = Api(p, http)
            await api.register(receiver)
            request_id = await api.delete(subject)
            await api.wait_status(request_id, {"partial"})
            async with asyncio.timeout(60):
                while not receiver.for_request(request_id):
                    await asyncio.sleep(0.2)
            return request_id

    return subject, asyncio.run(run())


def no_email_on(page: str, driver: WebDriver) -> None:
    found = EMAIL.findall(driver.page_source)
    assert not found, f"the {page} page shows an email address: {found}"


def text_of(driver: WebDriver, element_id: str) -> str:
    """The element's text, or "" while the page it is on is still being replaced."""
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def until(driver: WebDriver, check, timeout_s: float = 30, reload: bool = True) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not seen in {timeout_s} s on {driver.current_url}"
        time.sleep(0.5)
        if reload:
            driver.refresh()


def test_an_operator_signs_in_finds_a_request_sees_its_proof_and_places_and_releases_a_hold(pipeline, browser):
    subject, request_id = a_partial_deletion(pipeline)
    console = pipeline.url("audit") + "/console"
    driver = browser

    driver.get(console + "/requests")
    assert driver.current_url.endswith("/console/login")  # not signed in: sent to sign in
    driver.find_element(By.ID, "token").send_keys(token("deletion:self"))
    driver.find_element(By.ID, "sign-in").click()
    assert "audit:read" in driver.find_element(By.ID, "error").text  # refused: no audit:read

    admin = token(AUDIT_READ, DELETION_ANY, RETENTION_ADMIN, WEBHOOKS_ADMIN, subject="dpo")
    driver.find_element(By.ID, "token").send_keys(admin)
    driver.find_element(By.ID, "sign-in").click()
    until(driver, lambda: driver.current_url.endswith("/console/requests"), reload=False)
    cookie = driver.get_cookie("lethe_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert admin not in cookie["value"]  # the browser holds a session id, not the token

    row = driver.find_element(By.XPATH, f"//table[@id='requests']//tr[td//a[text()='{request_id}']]")
    assert subject in row.text and "partial" in row.text
    assert row.find_element(By.CSS_SELECTOR, ".pill.done")  # finished within its deadline
    no_email_on("requests", driver)
    Select(driver.find_element(By.ID, "status")).select_by_value("partial")
    driver.find_element(By.XPATH, "//form[@class='filters']//button").click()
    until(
        driver,
        lambda: "status=partial" in driver.current_url and request_id in text_of(driver, "requests"),
        reload=False,
    )

    driver.find_element(By.LINK_TEXT, request_id).click()
    until(driver, lambda: text_of(driver, "request-id") == request_id, reload=False)
    assert driver.find_element(By.ID, "status").text == "partial"
    timeline = driver.find_element(By.ID, "timeline").text
    for stage in ("received", "purging", "keys_destroyed", "notified"):
        assert stage in timeline
    invoices = driver.find_element(By.XPATH, "//table[@id='datasets']//tr[td[1][text()='invoices']]").text
    assert "retained" in invoices and "HGB §257" in invoices
    assert "erased" in driver.find_element(By.XPATH, "//table[@id='datasets']//tr[td[1][text()='profiles']]").text
    assert "tagged" in driver.find_element(By.XPATH, "//table[@id='datasets']//tr[td[1][text()='accounts']]").text
    until(driver, lambda: "deletion.notified" in text_of(driver, "audit"))
    deliveries = driver.find_element(By.ID, "deliveries").text
    assert "data_deletion.partial" in deliveries and "204" in deliveries
    driver.find_element(By.XPATH, "//table[@id='deliveries']//button[text()='Redeliver']").click()
    until(driver, lambda: "Redelivery scheduled" in driver.page_source, reload=False)
    receipt = driver.find_element(By.ID, "receipt").get_attribute("href")
    assert receipt.endswith(f"/console/requests/{request_id}/receipt")
    no_email_on("request", driver)
    shot = Path(os.environ.get("LETHE_CONSOLE_SCREENSHOT", str(pipeline.workdir / "console-request.png")))
    driver.save_screenshot(str(shot))

    session = {"lethe_console": cookie["value"]}

    async def fetch() -> tuple[int, dict, int]:
        async with aiohttp.ClientSession(cookies=session) as http:
            async with http.get(receipt) as r:
                body = await r.json(content_type=None)
                got = r.status
            async with http.post(console + "/retention/holds", data={"reason": "x"}) as forged:
                return got, body, forged.status  # the same session, without the form's CSRF token

    status, signed, forged = asyncio.run(fetch())
    assert status == 200 and signed["document"]["request_id"] == request_id and signed["signature"]
    assert forged == 403

    driver.get(console + "/retention")
    assert "tax-10y" in driver.find_element(By.ID, "rules").text
    form = driver.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "rule_id").send_keys("chargebacks-18m")
    form.find_element(By.NAME, "legal_basis").send_keys("legal obligation (GDPR Art. 17(3)(b))")
    form.find_element(By.NAME, "legal_ref").send_keys("card scheme rules, 18 months")
    driver.execute_script("arguments[0].value = '2027-12-31'", form.find_element(By.NAME, "expires_at"))
    form.find_element(By.XPATH, ".//input[@name='datasets' and @value='invoices']").click()
    form.find_element(By.XPATH, ".//button").click()
    until(driver, lambda: "Rules saved as version 2" in text_of(driver, "flash"), reload=False)
    rule = driver.find_element(By.XPATH, "//table[@id='rules']//tr[td[1][text()='chargebacks-18m']]").text
    assert "card scheme rules" in rule and "2027-12-31" in rule
    until(driver, lambda: "retention.rules_changed" in text_of(driver, "trail"))
    driver.find_element(By.ID, "hold-subject").send_keys(subject)
    driver.find_element(By.ID, "hold-reason").send_keys("litigation")
    driver.find_element(By.ID, "hold-basis").send_keys("legal claims (GDPR Art. 17(3)(e))")
    driver.find_element(By.ID, "hold-ref").send_keys("case 2026-311")
    driver.find_element(By.ID, "hold-ds-chat_messages").click()
    driver.find_element(By.ID, "place-hold").click()
    until(driver, lambda: "placed" in text_of(driver, "flash"), reload=False)
    hold_row = f"//table[@id='holds']//tr[td[2][text()='{subject}']]"
    assert "case 2026-311" in driver.find_element(By.XPATH, hold_row).text
    until(driver, lambda: "legal_hold.placed" in text_of(driver, "trail"))
    driver.find_element(By.XPATH, hold_row + "//button[@class='release']").click()
    until(driver, lambda: "released" in text_of(driver, "flash"), reload=False)
    assert not driver.find_elements(By.XPATH, hold_row + "//button[@class='release']")
    until(driver, lambda: "legal_hold.released" in text_of(driver, "trail"))
    no_email_on("retention", driver)

    driver.get(console + "/health")
    services = driver.find_element(By.ID, "services").text
    assert services.count("ready") >= 5 and "not ready" not in services and "unreachable" not in services
    assert driver.find_element(By.CSS_SELECTOR, "#verify .pill").text == "ok"
    assert "deletion.requested" in driver.find_element(By.ID, "lag").text
    assert "deletion.requested.dlq" in driver.find_element(By.ID, "dlq").text
    no_email_on("health", driver)

    driver.find_element(By.XPATH, "//header//button[text()='Sign out']").click()
    driver.get(console + "/requests")
    assert driver.current_url.endswith("/console/login")
