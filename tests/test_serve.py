"""`hwr serve`: drawings made to look like Chars74K pages, the HTTP API on a real uvicorn server, the CLI."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch
from PIL import Image, ImageDraw

from hwr.data import preprocess, scan
from hwr.predict import find_checkpoint, load_model, predict
from hwr.serve import (CENTRE_X, CENTRE_Y, HEIGHT, INK_LEVEL, MAX_BYTES, PAGE, STROKE, WIDTH, create_app,
                       exposure_warning, ink_stats, page_stats, running, to_page)
from hwr.train import CHECKPOINT_FILE, load_checkpoint, save_checkpoint

CANVAS = (600, 450)  # the page's canvas (hwr/static/draw.html)
PEN = STROKE[1] * CANVAS[0] / PAGE[0]  # its pen width


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def drawn(strokes, size=CANVAS, width=PEN, mode="RGB", background="white") -> Image.Image:
    """A canvas with polylines drawn as the page draws them (round caps and joins)."""
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    for points in strokes:
        draw.line(points, fill="black", width=round(width), joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill="black")
    return image


# An "A" about as big as a typical Chars74K character, in the middle of the canvas.
LETTER_A = [[(230, 330), (295, 115), (370, 330)], [(255, 250), (345, 250)]]


def in_range(stats) -> bool:
    return (HEIGHT[0] <= stats.height <= HEIGHT[2] and WIDTH[0] <= stats.width <= WIDTH[2]
            and CENTRE_X[0] <= stats.centre_x <= CENTRE_X[2] and CENTRE_Y[0] <= stats.centre_y <= CENTRE_Y[2]
            and STROKE[0] <= stats.stroke <= STROKE[2])


def ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < INK_LEVEL


# ------------------------------------------------------------------ to_page, no server


def test_a_typical_drawing_is_only_scaled_onto_the_page():
    canvas = drawn(LETTER_A)
    page = to_page(canvas)
    assert page.size == PAGE and page.mode == "L"
    assert set(np.unique(np.asarray(page))) == {0, 255}  # black on white, like Chars74K
    assert in_range(ink_stats(ink(page)))
    plain = ink(canvas.convert("L").resize(PAGE, Image.Resampling.BILINEAR))
    assert (ink(page) != plain).mean() < 0.001  # nothing moved, scaled or re-stroked


@pytest.mark.parametrize("case", ["small, thin, in a corner", "huge and thick", "off-centre on a square canvas"])
def test_an_atypical_drawing_is_pulled_into_the_range_of_real_pages(case):
    canvas = {
        "small, thin, in a corner": lambda: drawn([[(x / 4 + 20, y / 4 + 10) for x, y in s] for s in LETTER_A],
                                                   width=3),
        "huge and thick": lambda: drawn([[(x * 1.6 - 180, y * 1.9 - 200) for x, y in s] for s in LETTER_A],
                                        width=70),
        "off-centre on a square canvas": lambda: drawn([[(x + 100, y + 40) for x, y in s] for s in LETTER_A],
                                                       size=(500, 500)),
    }[case]()
    before = ink_stats(ink(canvas.resize(PAGE, Image.Resampling.BILINEAR)))
    after = ink_stats(ink(to_page(canvas)))
    assert not in_range(before) and in_range(after), (before, after)


def test_a_transparent_canvas_is_read_as_ink_on_white():
    clear = drawn(LETTER_A, mode="RGBA", background=(0, 0, 0, 0))
    assert np.array_equal(np.asarray(to_page(clear)), np.asarray(to_page(drawn(LETTER_A))))


def test_an_empty_or_faint_drawing_is_refused():
    for canvas in (Image.new("RGB", CANVAS, "white"), Image.new("RGB", CANVAS, (200, 200, 200)),
                   Image.new("RGBA", CANVAS, (0, 0, 0, 0))):
        with pytest.raises(ValueError, match="empty"):
            to_page(canvas)


@pytest.mark.realdata
def test_the_typical_ranges_are_those_of_the_real_pages(real_data_dir):
    """HEIGHT, WIDTH, CENTRE_X/Y and STROKE (percentiles 5, 50, 95 over all 3,410 pages), on 300 pages
    drawn at random: nine in ten fall in each range, and the medians agree."""
    samples = scan(real_data_dir)
    stats = [page_stats(samples[i].path) for i in np.random.default_rng(0).choice(len(samples), 300, replace=False)]
    for name, (low, median, high) in (("height", HEIGHT), ("width", WIDTH), ("centre_x", CENTRE_X),
                                      ("centre_y", CENTRE_Y), ("stroke", STROKE)):
        values = np.array([getattr(s, name) for s in stats])
        inside = np.mean((values >= low) & (values <= high))
        assert 0.85 <= inside <= 0.95 and abs(np.median(values) - median) < 0.05 * median, (name, inside)


# ------------------------------------------------------------------ the HTTP API on a real server


@pytest.fixture(scope="module")
def server(tiny_run):
    app = create_app(tiny_run)
    with running(app) as url:
        yield url, app


def post_drawing(url: str, image: Image.Image) -> requests.Response:
    return requests.post(url + "api/drawing", json={"image": data_url(image)}, timeout=60)


def test_page_and_info(server):
    url, app = server
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)  # nothing fetched from elsewhere
    info = requests.get(url + "api/info", timeout=10).json()
    assert info["image_size"] == 32 and info["stroke"] == STROKE[1] and info["device"] == "cpu"
    assert info["checkpoint"].endswith(CHECKPOINT_FILE)


def test_a_drawing_gets_the_top3_and_the_models_input(server):
    url, _ = server
    answer = post_drawing(url, drawn(LETTER_A))
    assert answer.status_code == 200, answer.text
    out = answer.json()
    probs = [t["p"] for t in out["top"]]
    assert len(out["top"]) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert len({t["char"] for t in out["top"]}) == 3
    seen = Image.open(io.BytesIO(base64.b64decode(out["input"].split(",", 1)[1])))
    assert seen.size == (32, 32)
    assert np.array_equal(np.asarray(seen), preprocess(to_page(drawn(LETTER_A)), 32))


def test_an_upload_is_read_as_hwr_predict_reads_the_file(server, tiny_run, cache_dir):
    url, _ = server
    files = [next((cache_dir / "synthetic-seed0").rglob(f"img{n:03d}-002.png")) for n in (1, 11, 40)]
    expected = predict(tiny_run, files)
    for path, want in zip(files, expected):
        answer = requests.post(url + "api/image", data=path.read_bytes(), headers={"Content-Type": "image/png"},
                               timeout=60)
        assert answer.status_code == 200, answer.text
        got = answer.json()["top"]
        assert [t["char"] for t in got] == [c for c, _ in want.top]
        assert np.allclose([t["p"] for t in got], [p for _, p in want.top], rtol=1e-5)


@pytest.mark.realdata
def test_a_real_page_drawn_on_the_canvas_gets_the_top3_of_hwr_predict(server, tiny_run, real_data_dir):
    """A Chars74K page rendered at the canvas's size and sent as a drawing: the server's top 3 are those
    of `hwr predict` on the file. Characters may only trade places where the file's own probabilities
    are a near tie (closer than TOL), which is where a nearly untrained model's ranking is arbitrary."""
    url, _ = server
    tol = 1e-3
    pages = [s.path for s in scan(real_data_dir)[::97] if in_range(page_stats(s.path))]
    assert len(pages) >= 20
    expected = predict(tiny_run, pages, k=4)
    for path, want in zip(pages, expected):
        canvas = Image.open(path).convert("RGB").resize(CANVAS, Image.Resampling.BILINEAR)
        answer = post_drawing(url, canvas)
        assert answer.status_code == 200, answer.text
        out = answer.json()
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["input"].split(",", 1)[1]))), dtype=int)
        with Image.open(path) as original:
            direct = preprocess(original, 32).astype(int)
        assert np.abs(seen - direct).max() <= 8 and np.abs(seen - direct).mean() < 0.1, path.name
        probs = [p for _, p in want.top]
        for rank, (got, (char, p)) in enumerate(zip(out["top"], want.top)):
            assert abs(got["p"] - p) < tol, (path.name, rank)
            near_tie = any(abs(p - probs[j]) < tol for j in (rank - 1, rank + 1) if 0 <= j < len(probs))
            assert got["char"] == char or near_tie, (path.name, out["top"], want.top)


BAD = {  # name: (route, request keyword arguments, status, words in the message)
    "not an image": ("api/image", dict(data=b"GIF89a not really", headers={"Content-Type": "image/gif"}), 400,
                     "not a readable image"),
    "drawing not an image": ("api/drawing", dict(json={"image": "data:image/png;base64," +
                                                        base64.b64encode(b"hello").decode()}), 400,
                             "not a readable image"),
    "empty drawing": ("api/drawing", dict(json={"image": data_url(Image.new("RGB", CANVAS, "white"))}), 422,
                      "empty"),
    "upload over the limit": ("api/image", dict(data=b"\x89PNG" + bytes(MAX_BYTES),
                                                headers={"Content-Type": "image/png"}), 413, "limit"),
    "chunked upload over the limit": ("api/image", dict(data=(bytes(1_000_000) for _ in range(6)),
                                                        headers={"Content-Type": "image/png"}), 413, "limit"),
    "too many pixels": ("api/image", dict(data=png(Image.new("1", (6000, 5000), 1)),
                                          headers={"Content-Type": "image/png"}), 413, "pixels"),
    "drawing as text": ("api/drawing", dict(data=b"{}", headers={"Content-Type": "text/plain"}), 415,
                        "application/json"),
    "upload as form": ("api/image", dict(files={"file": ("a.png", b"x")}), 415, "image/"),
    "upload without a type": ("api/image", dict(data=b"x"), 415, "content type"),
    "malformed JSON": ("api/drawing", dict(data=b'{"image": "data:', headers={"Content-Type": "application/json"}),
                       400, "not valid JSON"),
    "JSON without image": ("api/drawing", dict(json={"picture": 1}), 400, '"image"'),
    "JSON list": ("api/drawing", dict(json=[1, 2]), 400, '"image"'),
    "bad base64": ("api/drawing", dict(json={"image": "data:image/png;base64,@@@"}), 400, "base64"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_4xx_with_one_sentence_and_the_server_goes_on(server, case):
    url, _ = server
    route, kwargs, status, words = BAD[case]
    answer = requests.post(url + route, timeout=60, **kwargs)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert words in message and message.endswith(".") and "\n" not in message and len(message) < 200
    assert "Traceback" not in answer.text
    assert post_drawing(url, drawn(LETTER_A)).status_code == 200  # still serving


def test_inference_runs_off_the_event_loop(server):
    """While a prediction waits for the model, the server still answers other requests."""
    from concurrent.futures import ThreadPoolExecutor

    url, app = server
    lock = app.state.recognizer._lock
    with ThreadPoolExecutor(1) as pool:
        with lock:  # the model is busy
            pending = pool.submit(post_drawing, url, drawn(LETTER_A))
            assert requests.get(url + "api/info", timeout=10).status_code == 200
            assert requests.get(url, timeout=10).status_code == 200
            assert not pending.done()
        assert pending.result(timeout=60).status_code == 200


# ------------------------------------------------------------------ checkpoints: runs, trials, experiments


def test_find_checkpoint_for_a_run_a_trial_and_an_experiment(tiny_run, tmp_path):
    ckpt = tiny_run / CHECKPOINT_FILE
    assert find_checkpoint(ckpt) == ckpt and find_checkpoint(tiny_run) == ckpt
    experiment = tmp_path / "exp"
    for trial, steps, best in (("trial_a", (0, 1), 0.30), ("trial_b", (0, 2, 10), 0.55), ("trial_c", (0,), 0.10)):
        for step in steps:
            (experiment / trial / f"checkpoint_{step:06d}").mkdir(parents=True)
            shutil.copy(ckpt, experiment / trial / f"checkpoint_{step:06d}" / CHECKPOINT_FILE)
        rows = [{"epoch": 1, "best_val_acc": best / 2}, {"epoch": 2, "best_val_acc": best}]
        (experiment / trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert find_checkpoint(experiment / "trial_a") == experiment / "trial_a" / "checkpoint_000001" / CHECKPOINT_FILE
    assert find_checkpoint(experiment) == experiment / "trial_b" / "checkpoint_000010" / CHECKPOINT_FILE
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        find_checkpoint(tmp_path / "empty")


def test_a_checkpoint_without_best_weights_serves_its_last_ones(tiny_run, tmp_path):
    state = load_checkpoint(tiny_run / CHECKPOINT_FILE)
    weights = state["best"] if state.get("best") is not None else state["model"]
    slim = {**{k: v for k, v in state.items() if k != "best"}, "model": weights}  # no "best" key at all
    save_checkpoint(tmp_path / CHECKPOINT_FILE, slim)
    model, size = load_model(tmp_path)
    reference, _ = load_model(tiny_run)
    reference.load_trainable_state(weights)
    x = torch.from_numpy(preprocess(drawn(LETTER_A), size)[None].copy())
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


@pytest.mark.slow
def test_serve_on_a_finished_study_picks_its_best_trial(finished_study):
    experiment, report = finished_study
    best = max((t for t in experiment.iterdir() if (t / "result.json").exists()),
               key=lambda t: json.loads((t / "result.json").read_text().splitlines()[-1])["best_val_acc"])
    app = create_app(experiment)
    assert app.state.recognizer.checkpoint.parent.parent == best
    with running(app) as url:
        assert post_drawing(url, drawn(LETTER_A)).status_code == 200


# ------------------------------------------------------------------ the command line


def test_hwr_serve_starts_on_loopback_answers_and_stops_on_ctrl_c(tiny_run):
    proc = subprocess.Popen([sys.executable, "-m", "hwr", "serve", str(tiny_run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+/) ", line)
        assert match, line + proc.stderr.read()
        assert '<canvas id="pad"' in requests.get(match.group(1), timeout=10).text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "warning" not in err


def test_hwr_serve_bad_checkpoint_or_busy_port_is_one_sentence_and_exit_2(tiny_run, tmp_path):
    missing = subprocess.run([sys.executable, "-m", "hwr", "serve", str(tmp_path / "nope.pt")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        taken = subprocess.run([sys.executable, "-m", "hwr", "serve", str(tiny_run), "--port", str(port)],
                               capture_output=True, text=True, timeout=120)
    assert taken.returncode == 2 and f"127.0.0.1:{port}" in taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("host, warns", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                         ("127.0.0.2", False), ("0.0.0.0", True), ("::", True),
                                         ("192.168.1.20", True), ("myhost.example", True)])
def test_a_host_other_than_loopback_gets_a_warning(host, warns):
    message = exposure_warning(host)
    assert (message is not None) == warns
    if warns:
        assert host in message and "no authentication" in message
