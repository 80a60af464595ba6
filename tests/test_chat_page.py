"""The chat page in a real browser: headless Chromium, driven by Selenium, types messages into
the page served by `buildllm.serve`, sends them, and reads each reply as it streams in. The
reply must be the API's answer to the same conversation, and arrive in more than one piece.

It needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`),
or Google Chrome and its chromedriver as GitHub's Ubuntu runners have them. Without them the
test is skipped, and says why, except in CI (the CI variable is set), where it fails instead:
.ci/run installs them, so a skip there would hide a broken page.
"""

import os
import shutil

import pytest
from openai import OpenAI

from buildllm.serve import BackgroundServer, create_app

MODEL = "tiny"
INSTALL = "apt-get install chromium chromium-driver"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; in CI (the CI variable is set) this test must run, not skip")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with no network of its own: no updates, sync or first-run pages."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed: pip install -r requirements.txt")
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or shutil.which(
        "chromedriver", path=os.environ.get("CHROMEWEBDRIVER"))  # where GitHub's runners keep it
    if not (chromium and driver):
        unavailable(f"Debian's chromium is not installed: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    # A driver path of our own: Selenium then never runs selenium-manager to download one.
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def server(chat):  # conftest's chat session over a tiny random GPT
    with BackgroundServer(create_app(chat, MODEL)) as up:
        yield up


def api_answer(server, messages: list[dict]) -> str:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    done = client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
    return done.choices[0].message.content


def send(browser, text: str, with_enter: bool = False):
    """Type `text`, send it, and wait for the reply to finish; returns the reply's element."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(browser.find_elements(By.CSS_SELECTOR, ".message.assistant"))
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    if with_enter:
        box.send_keys(Keys.ENTER)
    else:
        browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(
        lambda b: len(replies := b.find_elements(By.CSS_SELECTOR, ".message.assistant")) > before
        and replies[-1].get_attribute("data-state") in ("done", "error", "stopped"))
    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]


def test_the_page_streams_the_apis_answers_and_keeps_the_conversation(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "model").text == MODEL)

    first = send(browser, "Name a colour.")
    answer = api_answer(server, [{"role": "user", "content": "Name a colour."}])
    assert first.get_attribute("data-state") == "done"
    assert first.get_attribute("textContent") == answer
    assert int(first.get_attribute("data-pieces")) > 1, "the reply should stream in pieces"
    shown = [m.get_attribute("textContent") for m in browser.find_elements(By.CLASS_NAME, "user")]
    assert shown == ["Name a colour."]

    second = send(browser, "And another?", with_enter=True)  # Enter sends too
    conversation = [{"role": "user", "content": "Name a colour."},
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": "And another?"}]
    assert second.get_attribute("textContent") == api_answer(server, conversation)


def test_the_page_shows_the_servers_error_and_goes_on(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")
    refused = send(browser, "word " * 300)
    assert refused.get_attribute("data-state") == "error"
    assert "exceeds the context length 128" in refused.get_attribute("textContent")
    assert "error" in refused.get_attribute("class")
    after = send(browser, "Name a colour.")  # the refused message is not in the conversation
    assert after.get_attribute("textContent") == api_answer(
        server, [{"role": "user", "content": "Name a colour."}])
    assert len(browser.find_elements(By.CSS_SELECTOR, ".message.assistant")) == 2


def test_with_an_api_key_the_page_asks_for_it_once(browser, chat):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    with BackgroundServer(create_app(chat, MODEL, api_key="s3cret")) as keyed:
        browser.get(f"{keyed.url}/")
        for key in ("wrong", "s3cret"):  # a wrong key is asked for again
            prompt = WebDriverWait(browser, 30).until(expected_conditions.alert_is_present())
            assert prompt.text == "This server needs its API key:"
            prompt.send_keys(key)
            prompt.accept()
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "model").text == MODEL)
        reply = send(browser, "Name a colour.")  # the key is kept: no second question
        assert reply.get_attribute("data-state") == "done"
        client = OpenAI(base_url=f"{keyed.url}/v1", api_key="s3cret", max_retries=0)
        done = client.chat.completions.create(model=MODEL, temperature=0, messages=[
            {"role": "user", "content": "Name a colour."}])
        assert reply.get_attribute("textContent") == done.choices[0].message.content
