"""The recipients' pages in a real headless Chromium: load, click, see the result, and check
that the store changed (unsubscribe, DOI confirmation, report abuse). Page JavaScript is off."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gateway.core.message import header_values
from gateway.http.apikeys import add_key
from tests.integration.test_http_support import (
    local_path,
    rcpt_reply,
    send,
    start,
    unsubscribe_url_of,
)

POLICIES = [
    {"name": "customer-active", "mode": "enforce"},
    {"name": "suppression", "mode": "enforce"},
    {"name": "unsubscribe", "mode": "enforce"},
]


def wait_for_heading(driver, text: str, timeout: float = 15) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        return text in d.find_element(By.TAG_NAME, "h1").text

    # While the next page replaces the document, look-ups may hit the old one: retry those.
    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(shown)


def click_and_wait(driver, button, heading: str) -> None:
    """Click a button or link that loads the next page, wait until it shows `heading`."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    button.click()

    def replaced(_driver) -> bool:
        try:
            old.is_enabled()  # raises once the old document is gone
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 15).until(replaced)
    wait_for_heading(driver, heading)


def button(driver, text: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']")


def by_label(driver, label_text: str):
    """The form field a visible <label> names (as a screen reader user finds it)."""
    from selenium.webdriver.common.by import By

    for label in driver.find_elements(By.TAG_NAME, "label"):
        if label.text.strip() == label_text:
            return driver.find_element(By.ID, label.get_attribute("for"))
    raise AssertionError(f"no label {label_text!r}")


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    return start(gateway, scripted_mta, tmp_path, policies=POLICIES, managed=True)


def test_unsubscribe_page_button_unsubscribes(setup, browser, tmp_path):
    from selenium.webdriver.common.by import By

    gw, mta, http, _ = setup
    data = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(data, "X-Mailing-ID")
    driver = browser()
    driver.get(http.base + local_path(unsubscribe_url_of(data)) + "?lang=de")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de"
    assert driver.title == "Abmelden"
    assert "anna@example.org" in driver.find_element(By.TAG_NAME, "main").text
    # Loading the page (what a link scanner does) changed nothing.
    customer = gw.store.get_customer("acme")
    assert gw.store.find_suppression(customer.id, "anna@example.org") is None
    driver.save_screenshot(str(tmp_path / "unsubscribe.png"))

    click_and_wait(driver, button(driver, "Abmelden"), "Sie sind abgemeldet")
    assert "Das gilt ab sofort" in driver.find_element(By.TAG_NAME, "main").text
    assert driver.get_cookies() == []
    entry = gw.store.find_suppression(customer.id, "anna@example.org")
    assert (entry.reason, entry.mail_id, entry.created_by) == ("unsubscribe", mail_id, "http:page")
    assert rcpt_reply(gw, "anna@example.org")[0] == 550

    # The language switch is a plain link.
    click_and_wait(driver, driver.find_element(By.LINK_TEXT, "English"), "Unsubscribe")
    assert "already unsubscribed" in driver.find_element(By.TAG_NAME, "main").text


def test_doi_confirmation_page_records_the_evidence(setup, browser, tmp_path):
    from selenium.webdriver.common.by import By

    gw, _, http, _ = setup
    key, _ = add_key(tmp_path / "api-keys", "acme")
    answer = http.api(
        "POST",
        "/api/v1/consent/subscribe",
        key,
        {"email": "ben@example.org", "source": "https://customer.example/newsletter", "ip": "203.0.113.7"},
    ).json()
    driver = browser()
    driver.get(http.base + local_path(answer["confirm_url"]))
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert "ben@example.org" in driver.find_element(By.TAG_NAME, "main").text
    customer = gw.store.get_customer("acme")
    assert gw.store.get_consent(customer.id, "ben@example.org").status == "pending"

    click_and_wait(driver, button(driver, "Confirm subscription"), "Thank you")
    assert "is confirmed" in driver.find_element(By.TAG_NAME, "main").text
    evidence = gw.store.consent_evidence(customer.id, "ben@example.org")
    assert evidence["status"] == "confirmed"
    assert evidence["confirmed_ip"] == "127.0.0.1"
    assert "Chrome" in evidence["confirmed_user_agent"]
    assert evidence["confirmed_at"] is not None
    # The browser said where the POST came from: our page (its Origin), with the page nonce.
    [confirm] = [h for h in gw.store.consent_history(customer.id, "ben@example.org") if h.event == "confirm"]
    assert confirm.detail == {"result": "confirmed", "origin_check": "origin", "page_nonce": "valid"}


def test_report_abuse_form_with_a_pasted_mail_id(setup, browser):
    from selenium.webdriver.common.by import By

    gw, mta, http, _ = setup
    data = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(data, "X-Mailing-ID")
    driver = browser()
    driver.get(http.base + "/report?lang=en")
    by_label(driver, "Mail ID").send_keys(mail_id)
    click_and_wait(driver, button(driver, "Report email"), "Thank you for your report")
    text = driver.find_element(By.TAG_NAME, "main").text
    assert mail_id in text and "will get no more emails from this sender" in text
    [event] = gw.store.feedback_for_mail_id(mail_id)
    assert (event.kind, event.source, event.acted) == ("complaint", "report-page", True)
    customer = gw.store.get_customer("acme")
    assert gw.store.find_suppression(customer.id, "anna@example.org").reason == "complaint"


def test_report_abuse_form_with_an_uploaded_eml_and_a_forged_id(setup, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from gateway.mailid import MailIdCodec

    gw, mta, http, _ = setup
    data = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(data, "X-Mailing-ID")
    eml = tmp_path / "unwanted.eml"
    eml.write_bytes(data)
    driver = browser()
    driver.get(http.base + "/report?lang=de")
    by_label(driver, "Oder laden Sie die E-Mail als Datei hoch (.eml)").send_keys(str(eml))
    click_and_wait(driver, button(driver, "E-Mail melden"), "Vielen Dank für Ihre Meldung")
    assert gw.store.feedback_for_mail_id(mail_id)[0].kind == "complaint"

    other = MailIdCodec.from_key_file(tmp_path / "forger.key")
    forged = other.finalize(other.new_stem(gw.store.get_customer("acme").id), 0, "ben@example.org")
    driver.get(http.base + "/report?lang=en")
    by_label(driver, "Mail ID").send_keys(forged)
    click_and_wait(driver, button(driver, "Report email"), "This mail ID is not ours")
    assert "Nothing was done" in driver.find_element(By.TAG_NAME, "main").text
    assert gw.store.find_suppression(gw.store.get_customer("acme").id, "ben@example.org") is None


def test_pages_fit_a_phone_screen(setup, browser, tmp_path):
    from selenium.webdriver.common.by import By

    gw, mta, http, _ = setup
    data = send(gw, mta, "anna@example.org")
    driver = browser(javascript=True, mobile=True)
    for name, path in (("unsubscribe", local_path(unsubscribe_url_of(data))), ("report", "/report")):
        driver.get(http.base + path)
        width = driver.execute_script("return document.documentElement.clientWidth")
        scroll = driver.execute_script("return document.documentElement.scrollWidth")
        assert width == 360 and scroll <= width, (path, width, scroll)
        button = driver.find_element(By.CSS_SELECTOR, "button")
        assert button.size["height"] >= 44
        # The button lies wholly on the screen, not cut off at the right edge.
        assert button.is_displayed()
        assert 0 <= button.rect["x"] and button.rect["x"] + button.rect["width"] <= width
        # What a phone shows: 360 CSS pixels at pixel ratio 2 (kept in tmp_path to look at).
        png = driver.get_screenshot_as_png()
        (Path(tmp_path) / f"phone-{name}.png").write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        shot_width, shot_height = struct.unpack(">II", png[16:24])
        ratio = driver.execute_script("return window.devicePixelRatio")
        assert (shot_width, ratio) == (720, 2), (path, shot_width, shot_height, ratio)
