"""Regenerate the dashboard screenshots in ``docs/`` against a live demo network.

    python -m scripts.screenshots            # from the repository root

Starts the scheduler and agents of ``scripts.dashboard_demo``, runs a few jobs, leaves
one pending, and saves ``docs/dashboard-<page>.png`` for each page, each as tall as the
page's content. Needs headless Chromium (``tests/setup_browser.sh`` installs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scripts.dashboard_demo import PENDING_NAME, chromium_driver, start_demo_network

PAGES = ("overview", "topology", "nodes", "placements")
WIDTH = 1400


def _wait_text(driver, css: str, text: str, timeout: float = 15) -> None:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in el.text for el in driver.find_elements(By.CSS_SELECTOR, css)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} never appeared in {css}")


def _fit_height(driver, limit: int = 3000) -> None:
    """Grow the window until the viewport shows the whole page (window chrome varies)."""
    for _ in range(4):
        inner, full = driver.execute_script(
            "return [window.innerHeight, document.documentElement.scrollHeight]"
        )
        if inner >= min(full, limit):
            return
        size = driver.get_window_size()
        driver.set_window_size(WIDTH, size["height"] + min(full, limit) - inner)
        time.sleep(0.3)


def capture(url: str, out: Path) -> list[Path]:
    """One PNG per page of the dashboard at ``url``, written into ``out``."""
    driver = chromium_driver(WIDTH, 900)
    saved = []
    try:
        for page in PAGES:
            driver.get(f"{url}/#{page}")
            marker = {
                "overview": ("#card-nodes", "ready"),
                "topology": ("#topology", "Recent job flows"),
                "nodes": ("#nodes", "cloud-1"),
                "placements": ("#placements", PENDING_NAME),
            }[page]
            _wait_text(driver, *marker)
            time.sleep(0.3)  # let the next poll land so no half-drawn frame is captured
            _fit_height(driver)
            path = out / f"dashboard-{page}.png"
            driver.save_screenshot(str(path))
            saved.append(path)
    finally:
        driver.quit()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    parser.add_argument("--jobs", type=int, default=8, help="extra finished jobs to show")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    network = start_demo_network(Path(tempfile.mkdtemp(prefix="anypu-shots-")), burst=args.jobs)
    try:
        for path in capture(network.url, args.out):
            print(f"wrote {path}")
    finally:
        network.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
