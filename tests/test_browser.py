"""Browser checks (headless Debian chromium through selenium, offline): the built documentation site renders
math with the local MathJax, API signatures and stored figures; JupyterLab opens the SAS notebook and runs
code on the package through the kernel REST + websocket API. Screenshots go to runs/browser/."""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = ROOT / "runs" / "browser"
WAIT = 60          # seconds: every wait below is bounded by this (page loads, MathJax, JupyterLab, the kernel)

pytestmark = pytest.mark.slow
# every test that drives the browser; the static check of the built HTML needs only the docs build
needs_chromium = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
                                           "(apt-get install -y chromium chromium-driver)")


# ---------------------------------------------------------------------------------------------- helpers

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=WAIT, interval=0.5, what="condition"):
    """Poll `predicate()` until it returns something truthy (returned) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files without a log line per request."""

    def log_message(self, *args):
        pass


def docs_module():
    """docs/build.py as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("ddrepro_docs_build", ROOT / "docs" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def screenshot(driver, name: str) -> Path:
    """Save the current window as runs/browser/<name>."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    return path


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation built into a temporary folder (the real build: -W, every page)."""
    tmp = tmp_path_factory.mktemp("docs")
    t0 = time.perf_counter()
    out = docs_module().build(out=tmp / "html", src=tmp / "src")
    print(f"\ndocs build: {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="module")
def server(site):
    """http://127.0.0.1:<port> serving the site from a thread; shut down afterwards, pass or fail."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def browser():
    """Headless chromium (the Debian binary and driver; no selenium-manager download); quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


def wait_mathjax(driver):
    """Wait (bounded) until MathJax 2 has loaded and finished typesetting the page."""
    wait_for(lambda: driver.execute_script("return !!(window.MathJax && MathJax.Hub && MathJax.isReady)"),
             what="MathJax 2 to load")
    driver.execute_async_script("var done = arguments[arguments.length - 1]; MathJax.Hub.Queue(function () { done(true); });")


def external_resources(driver, origin: str) -> list[str]:
    """Resources the page fetched from anywhere but `origin` (data: URLs allowed)."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith((origin, "data:", "blob:"))]


# ---------------------------------------------------------------------------------------------- docs

def test_no_network_urls_in_html(site):
    """Every script and stylesheet of every page is local: math included, nothing from a CDN."""
    import re
    bad = {}
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        urls = re.findall(r"<script[^>]*\ssrc=\"([^\"]+)\"", html) + \
            re.findall(r"<link[^>]*\srel=\"(?:stylesheet|preload|modulepreload)\"[^>]*\shref=\"([^\"]+)\"", html)
        remote = [u for u in urls if "://" in u or u.startswith("//")]
        if remote:
            bad[str(page.relative_to(site))] = remote
        if "math notranslate" in html:
            assert "_static/mathjax/MathJax.js" in html, page
    assert not bad, bad
    assert (site / "_static" / "mathjax" / "MathJax.js").is_file()


@needs_chromium
def test_docs_sas_page(site, server, browser):
    """The SAS notebook page: MathJax typeset its equations (no raw TeX left), stored figure outputs load;
    the API page shows signatures; the equations page links to them. Screenshot runs/browser/docs_sas.png."""
    from selenium.webdriver.common.by import By
    t0 = time.perf_counter()
    browser.get(f"{server}/nbs/10_sas.html")
    wait_mathjax(browser)
    rendered = browser.find_elements(By.CSS_SELECTOR, ".MathJax, .MathJax_CHTML, .mjx-chtml, .MathJax_SVG")
    assert rendered, "no MathJax output elements on the SAS notebook page"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Math Processing Error" not in text
    assert "$d_{ang}" not in text and "\\(" not in text and "\\arccos" not in text, "raw TeX visible"
    wait_for(lambda: browser.execute_script(
        "return [...document.images].every(i => i.complete)"), what="images to finish loading")
    figures = browser.execute_script(
        "return [...document.querySelectorAll('.cell_output img')].map(i => i.naturalWidth)")
    assert figures and max(figures) > 0, f"no stored figure output loaded: {figures}"
    assert not external_resources(browser, server), external_resources(browser, server)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", rendered[0])
    screenshot(browser, "docs_sas.png")

    browser.get(f"{server}/api/ddrepro.sas.html")
    sig = browser.find_element(By.ID, "ddrepro.sas.angular_distance")
    assert sig.text.startswith("ddrepro.sas.angular_distance(") and "eps" in sig.text, sig.text
    doc = browser.find_element(By.CSS_SELECTOR, "dl.py.function:has(#ddrepro\\.sas\\.angular_distance) dd")
    assert "Eq. 4" in doc.text

    browser.get(f"{server}/methods/sas.html")
    link = browser.find_element(By.CSS_SELECTOR, "a[href$='api/ddrepro.sas.html#ddrepro.sas.angular_distance']")
    assert link.text == "angular_distance"
    print(f"\ndocs browser checks: {time.perf_counter() - t0:.1f} s")


@needs_chromium
def test_docs_gallery(site, server, browser):
    """The figure gallery (when figures/README.md exists): every figure loads, anchor links resolve."""
    from selenium.webdriver.common.by import By
    if not (site / "figures" / "index.html").is_file():
        pytest.skip("no figures/README.md: the site has no gallery")
    browser.get(f"{server}/figures/index.html")
    wait_for(lambda: browser.execute_script("return [...document.images].every(i => i.complete)"),
             what="gallery images")
    widths = browser.execute_script(
        "return [...document.querySelectorAll('article img')].map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert widths and all(w > 0 for _, w in widths), widths
    anchors = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "article table a")]
    for href in anchors:
        if "#" in href and href.split("#")[0].endswith("figures/index.html"):
            assert browser.find_elements(By.ID, href.split("#", 1)[1]), href


# ---------------------------------------------------------------------------------------------- JupyterLab

def api(base: str, token: str, path: str, method: str = "GET", body=None, timeout: float = 30):
    """One JupyterLab REST call (token auth) → decoded JSON (None for an empty reply)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


# user settings of the test's JupyterLab: never write the repository's notebooks, never ask for the network
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
}


def write_lab_settings(config_dir: Path) -> None:
    """LAB_SETTINGS as JupyterLab user settings under `config_dir` (the server's JUPYTER_CONFIG_DIR)."""
    for rel, values in LAB_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port rooted at the project, with a random token, its config (autosave
    off, no news), runtime files and checkpoints in a temp dir; its kernels shut down and its process group
    killed afterwards, pass or fail."""
    port, token = free_port(), secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    write_lab_settings(tmp_path / "config")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DDREPRO_PROGRESS="0")
    log = open(tmp_path / "lab.log", "w")
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", "--no-browser", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={ROOT}", "--allow-root",
           f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}"]   # not nbs/.ipynb_checkpoints
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited ({proc.returncode}):\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
        try:
            return api(base, token, "/api/status", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
    try:
        t0 = time.perf_counter()
        wait_for(up, what="JupyterLab to answer /api/status")
        print(f"\nJupyterLab up in {time.perf_counter() - t0:.1f} s")
        yield base, token
    finally:
        try:
            for k in api(base, token, "/api/kernels", timeout=5) or []:
                api(base, token, f"/api/kernels/{k['id']}", method="DELETE", timeout=15)
        except Exception:
            pass                                    # the server may already be gone; kill it regardless
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def execute(base: str, token: str, kernel_id: str, code: str, timeout: float = WAIT) -> tuple[str, dict]:
    """Run `code` on a kernel through the server's websocket channels → (stdout text, execute_reply content)."""
    import websocket
    ws = websocket.create_connection(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
                                     f"?token={token}", timeout=timeout)
    try:
        msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "session": session, "username": "test", "msg_type": "execute_request",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out, reply, idle = [], None, False
        deadline = time.monotonic() + timeout
        while not (reply and idle):
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError(f"no execute_reply within {timeout} s (stdout so far: {''.join(out)!r})")
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif kind == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return "".join(out), reply
    finally:
        ws.close()


@needs_chromium
def test_lab_sas_notebook(lab, browser):
    """JupyterLab renders 10_sas.ipynb with its outputs (screenshot runs/browser/lab_10_sas.png), lists the
    `ddrepro` kernel when it is registered, and runs package code through the kernel websocket."""
    from jupyter_client.kernelspec import find_kernel_specs
    from selenium.webdriver.common.by import By
    base, token = lab
    t0 = time.perf_counter()
    notebook = ROOT / "nbs" / "10_sas.ipynb"
    stored = notebook.read_bytes()
    specs = api(base, token, "/api/kernelspecs")["kernelspecs"]
    if "ddrepro" in find_kernel_specs():           # registered by `make install` (ipykernel install --sys-prefix)
        assert "ddrepro" in specs and specs["ddrepro"]["spec"]["display_name"] == "Python (ddrepro)", list(specs)

    browser.get(f"{base}/lab/tree/nbs/10_sas.ipynb?token={token}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), what="the notebook's cells")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedMarkdown")
             and browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-OutputArea-output"),
             what="rendered markdown and stored outputs")
    # markdown cells render one by one: wait for the title's own h1 (on a loaded machine it can lag the first outputs)
    titles = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedMarkdown h1"), what="the title's h1")
    title = titles[0]
    assert title.text.strip().startswith("sas"), title.text
    time.sleep(2)                                   # let the first outputs paint before the screenshot
    screenshot(browser, "lab_10_sas.png")

    name = "ddrepro" if "ddrepro" in specs else "python3"
    kernel = api(base, token, "/api/kernels", method="POST", body={"name": name})
    try:
        out, reply = execute(base, token, kernel["id"],
                             "import ddrepro.sas; print(ddrepro.sas.angular_distance.__name__)")
    finally:
        api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE", timeout=15)
    assert notebook.read_bytes() == stored, "JupyterLab wrote nbs/10_sas.ipynb (autosave should be off)"
    assert reply["status"] == "ok", (reply, out)
    assert out.strip() == "angular_distance", out
    print(f"\nlab browser + kernel checks ({name} kernel): {time.perf_counter() - t0:.1f} s")
