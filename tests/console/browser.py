"""What the browser tests (and the screenshot script) do on the console's pages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

LONG = 240.0  # s: generation on a loaded 2-core machine is slow


def wait_for(what: Callable[[], T], timeout: float = 30.0, message: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
            if last:
                return last
        except Exception as exc:  # stale elements while the page re-renders
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {message or what} (last: {last!r})")


def by_id(driver: Any, id_: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id_)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def sign_in(driver: Any, url: str, key: str, *, remember: bool = False) -> None:
    driver.get(url + "/")
    wait_for(lambda: by_id(driver, "signin-form").is_displayed(), message="the sign-in form")
    by_id(driver, "signin-key").send_keys(key)
    if remember:
        by_id(driver, "signin-remember").click()
    by_id(driver, "signin-submit").click()
    wait_for(lambda: driver.execute_script("return document.body.dataset.view") in
             ("chat", "ops"), message="a signed-in page")


def set_value(driver: Any, id_: str, value: str) -> None:
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input'));", id_, value)


def ask(driver: Any, text: str, *, max_tokens: int | None = None,
        temperature: float | None = None) -> None:
    from selenium.webdriver.common.keys import Keys

    if max_tokens is not None:
        set_value(driver, "chat-max-tokens", str(max_tokens))
    if temperature is not None:
        set_value(driver, "chat-temperature", str(temperature))
    box = by_id(driver, "chat-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def streaming(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.body.classList.contains('streaming')"))


def last(driver: Any, role: str) -> Any:
    return wait_for(lambda: css(driver, f"#chat-messages .msg.{role}")[-1],
                    message=f"a {role} message")


def wait_answered(driver: Any, timeout: float = LONG) -> Any:
    """The last answer, once it has finished (its Copy button is there) or failed."""
    def done() -> Any:
        from selenium.webdriver.common.by import By

        reply = last(driver, "assistant")
        finished = reply.find_elements(By.CSS_SELECTOR, ".msg-actions button")
        failed = "blocked" in reply.get_attribute("class") or "failed" in reply.get_attribute(
            "class")
        return reply if (finished or failed) and not streaming(driver) else None

    return wait_for(done, timeout, "the answer to finish")


def text_of(element: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(element.find_element(By.CSS_SELECTOR, selector).text)
