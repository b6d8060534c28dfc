"""The course in a real browser: JupyterLab served locally, opened in headless Chromium.

Runs notebook 05 from top to bottom through JupyterLab's own "Run All Cells", then checks
that a diagram (inline SVG) and a widget (the replicas slider) rendered, and saves a
screenshot to test-artifacts/. Debian's chromium, driven by Playwright: no browser download.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = "05-kube-proxy-iptables.ipynb"



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyter-home")
    # Serve a copy: running the notebook (and autosave) must not rewrite the course's files.
    course = tmp_path_factory.mktemp("course") / "notebooks"
    shutil.copytree(ROOT / "notebooks", course)
    settings = home / "lab-settings"
    # Render every cell (JupyterLab 4 otherwise only renders the ones in view), no news popup.
    for plugin, values in {"notebook-extension/tracker.jupyterlab-settings":
                           '{"windowingMode": "none"}',
                           "apputils-extension/notification.jupyterlab-settings":
                           '{"fetchNews": "false"}'}.items():
        path = settings / "@jupyterlab" / plugin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values)
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(settings))
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={course}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("JupyterLab did not start")
            time.sleep(0.3)
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def test_a_notebook_runs_in_the_browser_with_a_diagram_and_a_widget(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}&reset")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        # wait for the kernel, then Run > Run All Cells, as a reader would
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=60_000)
        select = page.get_by_role("button", name="Select", exact=True)
        if select.count():  # JupyterLab may ask which kernel to start
            select.click()
        try:
            # start from a notebook without its stored outputs, so what shows is this run's
            page.get_by_role("menuitem", name="Edit", exact=True).click()
            page.get_by_text("Clear Outputs of All Cells", exact=True).click()
            assert page.locator(".jp-RenderedSVG").count() == 0
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            _wait_for_outputs(page)
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser-05-kube-proxy-iptables.png"))
        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']").all_inner_texts()
        assert not [e for e in errors if "Traceback" in e or "error:" in e]
        browser.close()


def _wait_for_outputs(page) -> None:
    # a diagram: graphviz SVG drawn inline by lab.draw_rules("node1")
    page.wait_for_selector(".jp-RenderedSVG", timeout=120_000)
    # a widget: the ReplicasSlider, rendered by the ipywidgets front end
    slider = page.wait_for_selector(".widget-slider, .jupyter-widget-slider, "
                                    ".widget-hslider", timeout=120_000)
    assert slider.is_visible()
    slider.scroll_into_view_if_needed()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=180_000)
