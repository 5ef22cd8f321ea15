"""The explorer in a real browser: Voila serves ``app/explorer.ipynb``, JupyterLab a notebook that
shows ``sl.explorer()``, and headless Chromium drives both.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
no browser is downloaded. Without them the tests are skipped, unless ``REQUIRE_BROWSER=1``, which
turns the skip into a failure (CI sets it). Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"

PAGE_TIMEOUT = 90.0
"""Seconds for Voila to start the kernel, import torch and finish the first run (a busy 2-core CI box)."""
CHANGE_TIMEOUT = 45.0


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not found (apt-get install -y chromium chromium-driver)"
    for module in ("selenium", "voila", "jupyterlab", "nbformat"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module!r} is not installed (pip install -e '.[dev]')"
    return None


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"REQUIRE_BROWSER=1 but the browser test cannot run: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(name: str, args: list[str], cwd: Path):
    """Run a Jupyter server (``python -m <args>``, which must listen on ``port``) and yield its URL
    once it answers; stop it and the kernels it started afterwards."""
    reason = _missing()
    if reason:
        _unavailable(reason)
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", *[arg.format(port=port) for arg in args]],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
            try:  # any HTTP answer (even a 404) means the server is up; GET / would start a kernel
                with urllib.request.urlopen(url + "shape-losses-ping", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not answer within 60 s")
                time.sleep(0.3)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels (its own session)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def voila_url():
    """Serve the app with Voila on 127.0.0.1 (a free port) for this module; stop it afterwards."""
    yield from _serve(
        "voila",
        ["voila", "--no-browser", "--Voila.ip=127.0.0.1", "--port={port}", "--Voila.port_retries=0",
         str(APP.relative_to(ROOT))],
        ROOT,
    )


LAB_NOTEBOOK = "explorer-check.ipynb"


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (no token, a throwaway root and workspace) serving one notebook whose
    only cell shows the explorer, as a learner would write it."""
    import nbformat

    root, workspaces = tmp_path_factory.mktemp("lab"), tmp_path_factory.mktemp("lab-workspaces")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import shape_losses as sl\nex = sl.explorer()\nex")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / LAB_NOTEBOOK)
    yield from _serve(
        "jupyter lab",
        ["jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
         "--ServerApp.password=",
         f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={workspaces}"],
        root,
    )


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        _unavailable(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="shape-losses-chromium-")
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    try:  # the driver path is explicit, so Selenium Manager never tries to download one
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - e.g. a driver that does not match the browser
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium could not be started: {exc}")
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_IMAGE_BYTES = """
const done = arguments[arguments.length - 1];
const img = document.querySelector('img.sl-image, .sl-image img');
if (!img || !img.src) { done(null); return; }
fetch(img.src).then(r => r.arrayBuffer()).then(buffer => {
  let text = '';
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  done(btoa(text));
}).catch(() => done(null));
"""


def image_bytes(driver) -> bytes | None:
    """The bytes behind the explorer's result <img> (ipywidgets serves them as a blob: URL)."""
    data = driver.execute_async_script(_IMAGE_BYTES)
    return None if data is None else base64.b64decode(data)


def text(driver, css: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )


def wait_for(predicate, timeout: float, what: str, quiet: bool = False):
    """Poll ``predicate`` until it returns something true (returned); fail after ``timeout`` seconds,
    or with ``quiet=True`` return ``None``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if quiet:
                return None
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def finished(driver) -> bool:
    """A run has finished and nothing newer is running (the status line says 'N steps in ...')."""
    return " steps in " in text(driver, ".sl-status")


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"explorer-{name}.png"))


def move_a_slider(driver, first: bytes, how: str = "keys") -> bytes:
    """Move the ``binary`` weight slider as a learner would - three steps with the arrow keys, or
    dragged with the mouse (``how="drag"``); return the new image's bytes once its run has
    finished (they must differ from ``first``)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    readout = ".sl-weight-binary .widget-readout"
    before = text(driver, readout)
    handle = driver.find_element(By.CSS_SELECTOR, ".sl-weight-binary .noUi-handle")
    if how == "drag":
        ActionChains(driver).drag_and_drop_by_offset(handle, 30, 0).perform()
    else:
        handle.click()
        for _ in range(3):
            handle.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: text(driver, readout) != before, 10, "the slider's readout to move")
    changed = wait_for(
        lambda: finished(driver) and (image_bytes(driver) or first) != first and image_bytes(driver),
        CHANGE_TIMEOUT, "a new image after moving the binary slider",
    )
    assert changed.startswith(b"\x89PNG") and changed != first
    return changed


def test_moving_a_slider_changes_the_shapes(browser, voila_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(voila_url)
    first = wait_for(lambda: finished(browser) and image_bytes(browser), PAGE_TIMEOUT, "the first image")
    assert first.startswith(b"\x89PNG")
    assert "Loss weights" in text(browser, ".shape-losses-explorer")
    shot(browser, "1-loaded")

    changed = move_a_slider(browser, first)
    shot(browser, "2-slider-moved")

    # an out-of-range value is shown inside the widget, and the widget keeps working
    seed = browser.find_element(By.CSS_SELECTOR, ".sl-seed input")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("-1", Keys.ENTER)
    wait_for(lambda: "seed" in text(browser, ".sl-message"), CHANGE_TIMEOUT, "the error message")
    shot(browser, "3-error-shown")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("5", Keys.ENTER)
    wait_for(lambda: text(browser, ".sl-message").strip() == "", CHANGE_TIMEOUT, "the message to clear")
    wait_for(
        lambda: finished(browser) and (image_bytes(browser) or changed) not in (first, changed),
        CHANGE_TIMEOUT, "a new image for seed 5",
    )
    shot(browser, "4-recovered")

    # the other views render too: loss curves and the animation of the run
    for title in ("Loss curves", "Animation"):
        tab = wait_for(
            lambda title=title: [t for t in browser.find_elements(By.CSS_SELECTOR, ".lm-TabBar-tab")
                                 if t.text.strip() == title],
            10, f"the {title!r} tab",
        )[0]
        tab.click()
        shot(browser, f"5-{title.lower().replace(' ', '-')}")
    frame = browser.find_element(By.CSS_SELECTOR, ".sl-frame-image")
    assert frame.is_displayed() and frame.get_attribute("src")


@pytest.mark.parametrize("frontend", ["lab", "notebook7"])
def test_the_explorer_in_jupyterlab_and_notebook_7(frontend, browser, lab_url):
    """The explorer as a learner uses it in JupyterLab and in Notebook 7 (served by the same
    server when the ``notebook`` package is installed): run the cell, wait for the shapes, move a
    slider, get new shapes."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if frontend == "notebook7":
        try:
            __import__("notebook")
        except ImportError:
            _unavailable("python package 'notebook' (Notebook 7) is not installed (pip install -e '.[dev]')")

    def run_the_cell() -> bool:
        try:  # the page redraws the cell while it starts up: a stale or hidden editor means "not yet"
            editor = browser.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")
            editor.click()
            editor.send_keys(Keys.SHIFT, Keys.ENTER)
        except WebDriverException:
            return False
        return True

    def explorer_shown() -> bool:
        return bool(browser.find_elements(By.CSS_SELECTOR, ".shape-losses-explorer"))

    path = f"lab/tree/{LAB_NOTEBOOK}" if frontend == "lab" else f"notebooks/{LAB_NOTEBOOK}"
    browser.get(lab_url + path)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content"),
             PAGE_TIMEOUT, f"the notebook to open ({frontend})")
    # Shift+Enter before the notebook has settled can be lost: press it again until the cell runs
    deadline = time.monotonic() + PAGE_TIMEOUT
    while not explorer_shown():
        wait_for(run_the_cell, 30, f"the cell to run ({frontend})")
        wait_for(lambda: explorer_shown() or time.monotonic() > deadline, 20, "the explorer", quiet=True)
        if time.monotonic() > deadline:
            pytest.fail(f"the explorer did not appear in {frontend} within {PAGE_TIMEOUT:.0f} s")
    first = wait_for(lambda: finished(browser) and image_bytes(browser), PAGE_TIMEOUT, "the first image")
    assert first.startswith(b"\x89PNG")
    assert "Loss weights" in text(browser, ".shape-losses-explorer")
    shot(browser, f"{frontend}-1-loaded")
    # Notebook 7 (7.6) keeps the arrow keys from a focused slider (the same widget takes them in
    # Voila and JupyterLab), so there the slider is dragged, as most learners move it anyway.
    move_a_slider(browser, first, how="keys" if frontend == "lab" else "drag")
    shot(browser, f"{frontend}-2-slider-moved")
