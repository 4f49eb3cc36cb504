"""The HTML report opened in a real headless browser (Debian's Chromium through chromedriver): the page
renders, every chart image decodes, and the console stays free of errors."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tasks.report import html
from tasks.report.files import write_file_atomically
from tasks.settings import load_settings
from tests.support.backend import Backend
from tests.support.shop import AS_OF, load_synthetic, run_on

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("SEGMENTS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SEGMENTS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
NO_BROWSER = (
    "the report's browser test needs Debian's chromium and chromium-driver "
    "(`apt-get install -y chromium chromium-driver`; `.ci/run` installs them when missing), or "
    "SEGMENTS_TEST_CHROMIUM / SEGMENTS_TEST_CHROMEDRIVER pointing at a Chromium and its driver"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(NO_BROWSER, pytrace=False)
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager stays offline: paths are given
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_report_renders_with_every_image_and_no_console_error(
    browser: object, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    path = tmp_path_factory.mktemp("sqlite") / "shop.db"
    backend = Backend("sqlite", f"sqlite:///{path}", None)
    try:
        load_synthetic(backend, customers=400)
        settings = load_settings(**backend.settings(order_id_column="order_id", compare_algorithms=True))
        run_on(settings, AS_OF)
        run_on(settings, AS_OF + timedelta(days=14))
    finally:
        backend.dispose()
    data = html.report_data_from_outputs(settings)
    rendered = html.render_report(data, outputs="test")
    report = tmp_path / "report.html"
    write_file_atomically(report, rendered.html)

    browser.get(report.as_uri())

    assert browser.title == f"Customer segments as of {data.run['as_of']}"
    images = browser.find_elements(By.CSS_SELECTOR, "img.chart")
    keys = [image.get_attribute("data-chart") for image in images]
    assert keys == [chart.key for chart in rendered.charts]
    assert set(keys) == {"elbow", "silhouette", "sizes", "heatmap", "scatter", "transitions"}
    for image in images:
        decoded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0 && arguments[0].naturalHeight > 0", image
        )
        assert decoded, f"chart {image.get_attribute('data-chart')} did not decode"
        assert image.size["width"] > 200  # laid out, not collapsed
    profile_rows = browser.find_elements(By.CSS_SELECTOR, "table.profiles tbody.segment")
    assert len(profile_rows) == len(data.profiles)
    # the profile table, its recommended actions included, fits the 1280-pixel window: no scroll bar
    table = browser.find_element(By.CSS_SELECTOR, "table.profiles")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert table.rect["x"] + table.rect["width"] <= browser.execute_script("return window.innerWidth")
    action = browser.find_element(By.CSS_SELECTOR, "table.profiles .action")
    assert action.is_displayed() and action.rect["x"] + action.rect["width"] <= table.rect["x"] + table.rect["width"]
    captions = " ".join(caption.text for caption in browser.find_elements(By.CSS_SELECTOR, "figcaption"))
    assert "stable under resampling" in captions and "K comes from the knee" not in captions
    assert browser.find_elements(By.CSS_SELECTOR, "table.comparison tbody tr")
    assert browser.find_elements(By.CSS_SELECTOR, "table.transitions tbody tr")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]  # type: ignore[attr-defined]
    assert errors == []
