#!/usr/bin/env python3
"""The web console in a real headless Chromium (Debian's chromium and chromedriver, driven by
selenium), against a running `loom serve` with the cart example set up by the caller
(crates/cli/tests/cli/console.rs).

Checks: every page loads without console errors; the live tail shows an event appended during
the test; filtering; a projection's time-travel slider shows the state at an earlier position
and the diff shows the changed field; a command's rejection and outcome; a module upload; a
registration refused inline; a reader token sees no admin controls. Saves a screenshot of each
page into --shots.

Usage: console_test.py --url URL --admin TOKEN --reader TOKEN --wasm FILE --shots DIR
Exits non-zero on the first failure, with what was expected and what the page showed.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

ARGS = None


def browser(width=1280, height=800):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")
    # Debian's Chromium as root, on a machine with no network beyond loopback: no sandbox, no
    # background services that would try to reach the internet.
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ]:
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("LOOM_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def api(method, path, body=None, token=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(ARGS.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or ARGS.admin}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"null")


class Failure(Exception):
    pass


def wait(driver, what, condition, timeout=10):
    try:
        return WebDriverWait(driver, timeout).until(lambda d: condition(d))
    except TimeoutException:
        main = driver.find_element(By.ID, "main").text[:2000]
        raise Failure(f"waited {timeout} s for {what}; the page shows:\n{main}")


def loaded(driver):
    """The page has rendered (no "Loading…" left)."""
    wait(driver, "the page to load", lambda d: "Loading…" not in d.find_element(By.ID, "main").text)


def errors(driver):
    """Console messages at error level since the last call."""
    return [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]


def shot(driver, name, show=None):
    """Saves a screenshot; `show`, a CSS selector, is scrolled into view first."""
    if show:
        el = driver.find_elements(By.CSS_SELECTOR, show)
        if el:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el[0])
    os.makedirs(ARGS.shots, exist_ok=True)
    driver.save_screenshot(os.path.join(ARGS.shots, f"{name}.png"))


def open_page(driver, path, name):
    driver.get(ARGS.url + "/console" + path)
    loaded(driver)
    time.sleep(0.3)  # late requests (charts, live lists) report their errors too
    bad = errors(driver)
    if bad:
        raise Failure(f"{path}: console errors: {bad}")
    shot(driver, name)


def sign_in(driver, token):
    driver.get(ARGS.url + "/console")
    field = wait(driver, "the sign-in form", lambda d: d.find_elements(By.ID, "token"))[0]
    field.send_keys(token + Keys.ENTER)
    wait(driver, "the role badge", lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=role]"))
    loaded(driver)


def check(condition, message):
    if not condition:
        raise Failure(message)


def admin_session():
    d = browser()
    try:
        sign_in(d, ARGS.admin)
        check(d.find_element(By.CSS_SELECTOR, "[data-testid=role]").text == "admin", "signed in as admin")
        errors(d)
        for path, name in [
            ("", "overview"),
            ("/events", "events"),
            ("/events/3", "event"),
            ("/streams?prefix=cart/", "streams"),
            ("/streams/cart/c1", "stream"),
            ("/registry", "registry"),
            ("/modules", "modules"),
            ("/projections", "projections"),
            ("/projections/carts", "projection"),
            ("/projections/carts/state/cart/c1", "state"),
            ("/commands", "commands"),
            ("/reactors", "reactors"),
        ]:
            open_page(d, path, name)
            print(f"ok   {name} loads without console errors")

        # The event page: structured JSON and binary-mode headers of the same event.
        d.get(ARGS.url + "/console/events/3")
        loaded(d)
        headers = d.find_element(By.CSS_SELECTOR, "[data-testid=binary-headers]").text
        check("ce-position" in headers and "ce-subject" in headers, f"binary headers: {headers}")
        check('"position": 3' in d.find_element(By.CSS_SELECTOR, "[data-testid=event-json]").text, "event JSON")
        print("ok   an event shows as CloudEvents JSON and binary-mode headers")

        # The live tail on the overview shows an event appended now.
        open_page(d, "", "overview")
        wait(d, "the live list", lambda x: "cart/c1" in x.find_element(By.CSS_SELECTOR, "[data-testid=live]").text)
        api("POST", "/v1/commands/cart/live1", {"type": "create"})
        wait(d, "the appended event in the live list", lambda x: "cart/live1" in x.find_element(By.CSS_SELECTOR, "[data-testid=live]").text)
        print("ok   the overview's live tail shows an event appended during the test")

        # The events page follows live too.
        open_page(d, "/events?live=1", "events-live")
        api("POST", "/v1/commands/cart/live2", {"type": "create"})
        wait(d, "a fresh row", lambda x: any("cart/live2" in r.text for r in x.find_elements(By.CSS_SELECTOR, "tr.fresh")))
        print("ok   the events page follows new events")

        # Filtering by type.
        open_page(d, "/events", "events")
        box = d.find_element(By.NAME, "type")
        box.send_keys("had_item_removed" + Keys.ENTER)
        wait(d, "the filtered table", lambda x: "type=had_item_removed" in x.current_url and "Loading" not in x.find_element(By.ID, "main").text)
        time.sleep(0.3)
        types = [c.text for c in d.find_elements(By.CSS_SELECTOR, "[data-testid=events] td.type")]
        check(types == ["had_item_removed"], f"filtered types: {types}")
        d.find_element(By.NAME, "data").send_keys("$[?@.sku == 'apple'" + Keys.ENTER)
        wait(d, "the JSONPath refusal", lambda x: x.find_elements(By.CSS_SELECTOR, ".problem"))
        problem = d.find_element(By.CSS_SELECTOR, ".problem").text
        check("422" in problem and "JSONPath" in problem, f"problem shown: {problem}")
        shot(d, "events-filter-problem")
        errors(d)  # the refused request is logged by the browser as a failed resource
        print("ok   filtering by type works; a bad JSONPath shows the server's problem detail")

        # Time travel: cart/c1 is created (1), gets an apple (2) and a pear (3), loses the
        # apple (10) and gets two more pears (11). Now it holds three pears; at position 3 it
        # held an apple and a pear.
        open_page(d, "/projections/carts/state/cart/c1", "state")
        state = lambda: json.loads(d.find_element(By.CSS_SELECTOR, "[data-testid=state]").text)
        items = lambda: [(i["sku"], i["quantity"]) for i in state()["items"]]
        check(items() == [("pear", 3)], f"the state now: {state()}")
        slider = d.find_element(By.ID, "travel")
        slider.send_keys(Keys.ARROW_LEFT)
        wait(d, "the state at position 10", lambda x: "position 10," in x.find_element(By.CSS_SELECTOR, "[data-testid=state-position]").text)
        check(items() == [("pear", 1)], f"the state at 10: {state()}")
        slider.send_keys(Keys.ARROW_LEFT)
        wait(d, "the slider at position 3", lambda x: x.find_element(By.CSS_SELECTOR, "[data-testid=travel-position]").text == "position 3")
        wait(d, "the state at position 3", lambda x: "position 3," in x.find_element(By.CSS_SELECTOR, "[data-testid=state-position]").text)
        check(items() == [("apple", 2), ("pear", 1)], f"the state at 3: {state()}")
        slider.send_keys(Keys.HOME)
        wait(d, "the state at position 1", lambda x: "position 1," in x.find_element(By.CSS_SELECTOR, "[data-testid=state-position]").text)
        check(state()["items"] == [] and state()["status"] == "active", f"the state at 1: {state()}")
        shot(d, "state-travelled")
        print("ok   the time-travel slider shows the state at earlier positions")

        def compare(a, b):
            Select(d.find_element(By.ID, "diff-from")).select_by_value(a)
            Select(d.find_element(By.ID, "diff-to")).select_by_value(b)
            d.find_element(By.XPATH, "//button[text()='Compare']").click()
            wait(d, "the diff", lambda x: x.find_elements(By.CSS_SELECTOR, "[data-testid=diff] tbody tr"))
            time.sleep(0.3)
            return [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in d.find_elements(By.CSS_SELECTOR, "[data-testid=diff] tbody tr")]

        rows = compare("10", "11")
        check(rows == [["$.items[0].quantity", "changed", "1", "3"]], f"diff 10 → 11: {rows}")
        shot(d, "state-diff", "[data-testid=diff]")
        rows = compare("3", "10")
        check(len(rows) == 1 and rows[0][:2] == ["$.items[0]", "removed"] and '"apple"' in rows[0][2], f"diff 3 → 10: {rows}")
        print("ok   the diff between two positions shows the changed field, and an item removed")

        # Commands: a rejection, then an outcome.
        open_page(d, "/commands", "commands")
        Select(d.find_element(By.NAME, "entity")).select_by_value("cart")
        d.find_element(By.NAME, "key").send_keys("c1")
        body = d.find_element(By.NAME, "command")
        body.clear()
        body.send_keys('{"type": "remove_item", "sku": "kiwi"}')
        d.find_element(By.XPATH, "//button[text()='Send']").click()
        result = wait(d, "the rejection", lambda x: x.find_element(By.CSS_SELECTOR, "[data-testid=command-result]").text)
        check("Rejected by the decider" in result and 'the cart has no item "kiwi"' in result, f"rejection: {result}")
        errors(d)
        shot(d, "command-rejected", "[data-testid=command-result]")
        body.clear()
        body.send_keys('{"type": "add_item", "sku": "kiwi", "name": "Kiwi", "price": 30, "quantity": 4}')
        d.find_element(By.XPATH, "//button[text()='Send']").click()
        wait(d, "the appended events", lambda x: x.find_elements(By.CSS_SELECTOR, "[data-testid=command-events]"))
        events = d.find_element(By.CSS_SELECTOR, "[data-testid=command-events]").text
        check("had_item_added" in events, f"command events: {events}")
        shot(d, "command-outcome", "[data-testid=command-result]")
        print("ok   a command's rejection and its outcome are shown")

        # Upload a module with the file picker.
        open_page(d, "/modules", "modules")
        before = len(d.find_elements(By.CSS_SELECTOR, "[data-testid=modules] tbody tr"))
        d.find_element(By.ID, "module-file").send_keys(ARGS.wasm)
        wait(d, "the upload's result", lambda x: "Stored sha256:" in x.find_element(By.CSS_SELECTOR, "[data-testid=upload-result]").text)
        wait(d, "the module in the list", lambda x: len(x.find_elements(By.CSS_SELECTOR, "[data-testid=modules] tbody tr")) == before + 1)
        shot(d, "module-uploaded", "[data-testid=upload-result]")
        print("ok   a module uploads from the file picker")

        # A registration the server refuses shows its problem inline; a good one is saved.
        open_page(d, "/registry", "registry")
        d.find_element(By.NAME, "entity").send_keys("note")
        reg = d.find_element(By.NAME, "registration")
        reg.clear()
        reg.send_keys('{"events": {"was_noted": {"schema": {"type": "no-such-type"}}}}')
        d.find_element(By.XPATH, "//button[text()='Save']").click()
        wait(d, "the refusal", lambda x: x.find_elements(By.CSS_SELECTOR, "[data-testid=register] .problem"))
        refusal = d.find_element(By.CSS_SELECTOR, "[data-testid=register] .problem").text
        check("422" in refusal and "was_noted" in refusal, f"registration refusal: {refusal}")
        errors(d)
        reg.clear()
        reg.send_keys('{"open": true}')
        d.find_element(By.XPATH, "//button[text()='Save']").click()
        wait(d, "the new entity", lambda x: x.find_elements(By.ID, "entity-note"))
        print("ok   a refused registration shows the problem inline; a good one is saved")

        # Dark mode, and a narrow window.
        d.get(ARGS.url + "/console/projections")
        loaded(d)
        d.find_element(By.ID, "theme").click()
        shot(d, "projections-dark")
        d.set_window_size(420, 800)
        d.get(ARGS.url + "/console/events")
        loaded(d)
        shot(d, "events-narrow")
        width = d.execute_script("return document.documentElement.scrollWidth")
        check(width <= 440, f"the narrow page is {width}px wide")
        check(not errors(d), "no console errors in dark mode or a narrow window")
        print("ok   dark mode and a narrow window")
    finally:
        d.quit()


def reader_session():
    d = browser()
    try:
        sign_in(d, ARGS.reader)
        check(d.find_element(By.CSS_SELECTOR, "[data-testid=role]").text == "reader", "signed in as reader")
        for path in ["/projections", "/projections/carts", "/modules", "/registry", "/reactors", "/commands"]:
            d.get(ARGS.url + "/console" + path)
            loaded(d)
            buttons = [b.text for b in d.find_elements(By.CSS_SELECTOR, "main button")]
            admin = [b for b in buttons if b in ("Pause", "Resume", "Rebuild", "Delete", "Save", "Send")]
            check(not admin, f"{path}: a reader sees {admin}")
            check(not d.find_elements(By.ID, "module-file"), f"{path}: a reader sees the upload")
            check(not d.find_elements(By.CSS_SELECTOR, "[data-testid=register]"), f"{path}: a reader sees the registration form")
        shot(d, "reader-projections")
        check(not errors(d), "no console errors for a reader")
        print("ok   a reader token sees no admin controls")
    finally:
        d.quit()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--reader", required=True)
    p.add_argument("--wasm", required=True)
    p.add_argument("--shots", required=True)
    ARGS = p.parse_args()
    try:
        admin_session()
        reader_session()
    except Failure as f:
        print(f"FAIL {f}")
        return 1
    print("console: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
