"""The study's pages in a real headless Chromium (Debian's `chromium`, driven by Playwright; no browser
download): the draw page of `hwr serve`, the report, and TensorBoard's HParams view of a finished study.

Skipped, with the reason, without Playwright or Chromium (`apt-get install chromium`; another binary:
HWR_CHROMIUM=/path). Screenshots go to $HWR_SCREENSHOTS when set (docs/ holds the committed ones:
`HWR_SCREENSHOTS=docs .venv/bin/pytest tests/test_browser.py`), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hwr.predict import predict
from hwr.serve import create_app, running

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")

# Headless, and nothing that reaches out on its own (Chromium's connections are refused on closed networks).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    named = os.environ.get("HWR_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium) or set HWR_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("HWR_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watch:
    """A page's console errors, uncaught exceptions, failed requests and requests to other origins."""

    def __init__(self, page, origin: str | None = None):
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        if origin is not None:
            page.on("request", lambda r: r.url.startswith((origin, "data:", "blob:")) or self.foreign.append(r.url))


# ------------------------------------------------------------------ hwr serve's draw page

# The letter A on the 600x450 canvas, one stroke per input device.
STROKES = {"mouse": [(230, 330), (262, 222), (295, 115)], "pen": [(295, 115), (332, 222), (370, 330)],
           "touch": [(255, 250), (300, 250), (345, 250)]}


def stroke(page, cdp, kind: str, points) -> None:
    """One stroke of real input events: Playwright's mouse, or CDP's pen and touch input."""
    box = page.locator("#pad").bounding_box()
    pts = [(box["x"] + x * box["width"] / 600, box["y"] + y * box["height"] / 450) for x, y in points]
    if kind == "mouse":
        page.mouse.move(*pts[0])
        page.mouse.down()
        for p in pts[1:]:
            page.mouse.move(*p, steps=8)
        page.mouse.up()
    elif kind == "pen":
        base = {"button": "left", "pointerType": "pen", "clickCount": 1}
        cdp.send("Input.dispatchMouseEvent", {**base, "type": "mousePressed", "x": pts[0][0], "y": pts[0][1],
                                              "buttons": 1})
        for x, y in pts[1:]:
            cdp.send("Input.dispatchMouseEvent", {**base, "type": "mouseMoved", "x": x, "y": y, "buttons": 1})
        cdp.send("Input.dispatchMouseEvent", {**base, "type": "mouseReleased", "x": pts[-1][0], "y": pts[-1][1],
                                              "buttons": 0})
    else:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": pts[0][0], "y": pts[0][1]}]})
        for x, y in pts[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def answers(page) -> int:
    return int(page.eval_on_selector("#top", "el => el.dataset.done || 0"))


def wait_answer(page, n: int) -> list[tuple[str, float]]:
    page.wait_for_function(f"Number(document.getElementById('top').dataset.done) === {n}", timeout=60_000)
    return page.eval_on_selector_all("#top li", "lis => lis.map(li => [li.dataset.char, Number(li.dataset.p)])")


INK_PIXELS = """() => { const c = document.getElementById('pad');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n; }"""


def test_draw_page_strokes_clear_and_upload(browser, tiny_run, cache_dir, shots, tmp_path):
    with running(create_app(tiny_run)) as url:
        context = browser.new_context(viewport={"width": 1100, "height": 700}, has_touch=True)
        page = context.new_page()
        watch = Watch(page, origin=url)
        page.goto(url)
        page.wait_for_function("document.getElementById('model').textContent.includes('32 px')")
        page.evaluate("window.kinds = []; document.getElementById('pad')"
                      ".addEventListener('pointerdown', e => kinds.push(e.pointerType))")
        cdp = context.new_cdp_session(page)

        for n, (kind, points) in enumerate(STROKES.items(), start=1):
            stroke(page, cdp, kind, points)
            top = wait_answer(page, n)  # updated when each stroke ends
            assert len(top) == 3 and [p for _, p in top] == sorted((p for _, p in top), reverse=True), top
        assert page.evaluate("kinds") == ["mouse", "pen", "touch"]
        assert page.evaluate(INK_PIXELS) > 5000
        assert page.locator("#seen").is_visible()
        # The list is the server's answer for exactly what is on the canvas.
        canvas = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
        direct = requests.post(url + "api/drawing", json={"image": canvas}, timeout=60).json()["top"]
        assert [c for c, _ in top] == [t["char"] for t in direct]
        page.screenshot(path=str(shots / "serve.png"))

        page.click("#clear")
        assert wait_answer(page, 4) == []
        assert page.evaluate(INK_PIXELS) == 0 and not page.locator("#seen").is_visible()

        image = next((cache_dir / "synthetic-seed0").rglob("img011-003.png"))
        page.set_input_files("#file", str(image))
        top = wait_answer(page, 5)
        want = predict(tiny_run, [image])[0].top
        assert [c for c, _ in top] == [c for c, _ in want]
        assert all(abs(p - q) < 1e-6 for (_, p), (_, q) in zip(top, want))
        assert watch.errors == [] and watch.foreign == []

        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        assert wait_answer(page, 6) == []
        assert page.locator("#status.error").inner_text() == "Send the image as image/*, not text/plain."
        context.close()


# ------------------------------------------------------------------ the study's report


@pytest.mark.slow
def test_report_opens_without_errors_missing_images_or_dead_links(browser, finished_study, shots):
    _, report = finished_study
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    watch = Watch(page)
    page.goto((report / "report.html").as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images).map(i => [i.alt || i.src.slice(0, 60), "
                           "i.complete && i.naturalWidth > 0])")
    assert len(images) >= 4 and all(ok for _, ok in images), images
    # Every reference in the page (links, images, styles, scripts) is embedded, an anchor that exists, or a
    # file beside the report that exists.
    refs = page.evaluate("Array.from(document.querySelectorAll('[href], [src]'))"
                         ".map(e => e.getAttribute('href') || e.getAttribute('src'))")
    for ref in refs:
        if ref.startswith("#"):
            assert page.locator(f"[id='{ref[1:]}'], [name='{ref[1:]}']").count() > 0, ref
        elif not ref.startswith(("data:", "http://", "https://", "mailto:")):
            assert (report / ref.split("#")[0]).exists(), ref
    assert watch.errors == []
    height = min(page.evaluate("document.documentElement.scrollHeight"), 2400)  # the top: verdict, design
    page.screenshot(path=str(shots / "report.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1200, "height": height})
    page.close()


# ------------------------------------------------------------------ TensorBoard's HParams view


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hparams_api(url: str, route: str, body: dict) -> dict:
    answer = requests.post(f"{url}data/plugin/hparams/{route}", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json()


@pytest.mark.slow
def test_tensorboard_hparams_lists_every_trial_with_its_hyperparameters_and_metrics(browser, finished_study, shots,
                                                                                   tmp_path):
    experiment, _ = finished_study
    trials = {t.name: t for t in experiment.iterdir() if (t / "params.json").exists()}
    tensorboard = Path(sys.executable).with_name("tensorboard")
    port = free_port()
    log = open(tmp_path / "tensorboard.log", "w")
    proc = subprocess.Popen([str(tensorboard), "--logdir", str(experiment), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline, groups = time.monotonic() + 180, []
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 1000, "colParams": [],
                   "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}
        while len(groups) < len(trials):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "tensorboard.log").read_text()
            try:
                groups = hparams_api(url, "session_groups", request).get("sessionGroups", [])
            except requests.RequestException:
                pass
            time.sleep(0.5)
        info = hparams_api(url, "experiment", {"experimentName": ""})
        assert {h["name"] for h in info["hparamInfos"]} >= {"model/activation", "model/normalization", "train/seed"}
        assert {m["name"]["tag"] for m in info["metricInfos"]} >= {"ray/tune/val_acc", "ray/tune/val_loss",
                                                                   "ray/tune/test_acc"}
        assert sorted(g["name"] for g in groups) == sorted(trials)
        for g in groups:
            trial = trials[g["name"]]
            config = json.loads((trial / "params.json").read_text())
            assert g["hparams"] == {"model/activation": config["model"]["activation"],
                                    "model/normalization": config["model"]["normalization"],
                                    "train/seed": float(config["train"]["seed"])}
            metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
            last = json.loads((trial / "result.json").read_text().splitlines()[-1])
            for key in ("val_acc", "val_loss", "test_acc"):
                assert abs(metrics[f"ray/tune/{key}"] - last[key]) < 1e-6, (g["name"], key)

        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(url + "#hparams")
        page.get_by_text("per_image").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "tensorboard-hparams.png"))
        page.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # never left running: killed, and reaped
            proc.kill()
            proc.wait()
        log.close()
