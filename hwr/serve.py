"""`hwr serve`: a page to draw a character (mouse, pen or touch) or upload an image, on a trained checkpoint.

    app = create_app("results/ray/quick")      # a checkpoint, a run folder, a trial or a whole experiment
    serve("runs/a", host="127.0.0.1", port=8000)

Routes: `GET /` the page (static/draw.html: plain HTML and JS, nothing fetched from elsewhere),
`GET /api/info` the model, `POST /api/drawing` a canvas as JSON `{"image": "data:image/png;base64,..."}`,
`POST /api/image` an image file as the raw body with its image/* content type. Both answer
`{"top": [{"char", "p"} x 3], "input": <the model's input as a PNG data URL>, "ms": ...}`, and bad input
gets a 4xx with `{"error": one sentence}`.

An uploaded image is read exactly as `hwr predict` reads a file. A drawing is first made to look like a
Chars74K page (`to_page`): dark strokes on a white 1200x900 page, the character's size, position and
stroke width pulled into the range that nine in ten of the real pages fall in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import json
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from hwr.errors import UserError
from hwr.data import preprocess
from hwr.predict import find_checkpoint, load_model, top_k

PAGE = (1200, 900)  # (width, height) of a Chars74K EnglishHnd image
INK_LEVEL = 128  # a grey level below this is ink
# 5th, 50th and 95th percentiles over all 3,410 EnglishHnd pages, in page pixels (ink_stats on each);
# tests/test_serve.py checks them against the real set.
HEIGHT = (262, 443, 623)  # the character's bounding box
WIDTH = (187, 331, 511)
CENTRE_X = (480, 582, 693)  # the bounding box's centre
CENTRE_Y = (397, 471, 553)
STROKE = (64, 72, 86)  # stroke width
MAX_BYTES = 5_000_000  # request bodies
MAX_PIXELS = 25_000_000  # decoded images
TOP = 3


class ServeError(UserError, ValueError):
    """The server cannot start, explained in one sentence."""


class InputError(ValueError):
    """A request the server refuses: an HTTP 4xx status and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InkStats:
    height: int
    width: int
    centre_x: float
    centre_y: float
    stroke: float  # 2 x area / boundary pixels: the width of a long stroke


def stroke_width(mask: np.ndarray) -> float:
    boundary = np.count_nonzero(mask & ~ndimage.binary_erosion(mask))
    return 2 * np.count_nonzero(mask) / max(boundary, 1)


def ink_stats(mask: np.ndarray) -> InkStats | None:
    """Size, centre and stroke width of the ink in a boolean mask; None when there is none."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return InkStats(int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1),
                    (xs.max() + xs.min() + 1) / 2, (ys.max() + ys.min() + 1) / 2, stroke_width(mask))


def page_stats(path: Path) -> InkStats | None:
    """ink_stats of an image file seen as a page (resized to 1200x900 if it is not one)."""
    with Image.open(path) as img:
        gray = img.convert("L")
    if gray.size != PAGE:
        gray = gray.resize(PAGE, Image.Resampling.BILINEAR)
    return ink_stats(np.asarray(gray) < INK_LEVEL)


def _on_white(image: Image.Image) -> Image.Image:
    """Grayscale, with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("L")


def _place(centre: float, extent: int, bounds: tuple[float, float, float], page: int) -> int:
    """Where an `extent`-long run of ink starts so that its centre is `centre` pulled into bounds[0]..[2]."""
    start = round(centre - extent / 2)
    start = min(max(start, math.ceil(bounds[0] - extent / 2)), math.floor(bounds[2] - extent / 2))
    return min(max(start, 0), max(page - extent, 0))


def _size_factor(height: float, width: float) -> float:
    """The scale that brings a bounding box into the typical range (1 when it is already there)."""
    if height > HEIGHT[2] or width > WIDTH[2]:
        return min(HEIGHT[2] / height, WIDTH[2] / width)
    if height < HEIGHT[0]:
        return min(HEIGHT[0] / height, WIDTH[2] / width)
    return 1.0


def _restroke(mask: np.ndarray, radius: float) -> np.ndarray:
    """The ink grown (radius > 0) or shrunk by |radius| pixels, by a distance transform."""
    padded = np.pad(mask, math.ceil(abs(radius)) + 1)
    if radius >= 0:
        return ndimage.distance_transform_edt(~padded) <= radius
    thinner = ndimage.distance_transform_edt(padded) > -radius
    return thinner if thinner.any() else padded


def _set_stroke(mask: np.ndarray) -> np.ndarray:
    """Strokes outside the typical width range thickened or thinned to the median width.

    Growing the ink by r widens a long stroke by 2r; short strokes and joints make the measured width
    move by a little more or less, so the radius is corrected once from the first result.
    """
    width = stroke_width(mask)
    if STROKE[0] <= width <= STROKE[2]:
        return mask
    radius = (STROKE[1] - width) / 2
    first = _restroke(mask, radius)
    return _restroke(mask, radius + (STROKE[1] - stroke_width(first)) / 2)


def to_page(drawing: Image.Image) -> Image.Image:
    """A drawing as a Chars74K page: black ink on a white 1200x900 grayscale image.

    The drawing is scaled to fit the page (a 4:3 canvas maps onto it exactly) and its ink (darker than
    INK_LEVEL) is then kept as it is when its size, stroke width and position are in the range of the
    real pages; otherwise it is scaled, thickened or thinned (by a distance transform), or moved into it.
    """
    gray = _on_white(drawing)
    ys, xs = np.nonzero(np.asarray(gray) < INK_LEVEL)
    if len(ys) == 0:
        raise InputError(422, "The drawing is empty: draw a character first.")
    fit = min(PAGE[0] / gray.width, PAGE[1] / gray.height)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    scale = fit * _size_factor((bottom - top) * fit, (right - left) * fit)
    crop = gray.crop((left, top, right, bottom))
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                       Image.Resampling.BILINEAR)
    mask = np.asarray(crop) < INK_LEVEL
    if not mask.any():  # a faint drawing shrunk to nothing
        raise InputError(422, "The drawing is too faint: draw with darker strokes.")
    mask = _set_stroke(mask)
    ys, xs = np.nonzero(mask)
    mask = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    # The drawing's centre on the page, pulled into the typical range.
    h, w = mask.shape
    x0 = _place((left + right) / 2 * fit + (PAGE[0] - gray.width * fit) / 2, w, CENTRE_X, PAGE[0])
    y0 = _place((top + bottom) / 2 * fit + (PAGE[1] - gray.height * fit) / 2, h, CENTRE_Y, PAGE[1])
    page = np.full((PAGE[1], PAGE[0]), 255, dtype=np.uint8)
    region = page[y0: y0 + h, x0: x0 + w]
    region[mask[: region.shape[0], : region.shape[1]]] = 0
    return Image.fromarray(page, "L")


def open_image(data: bytes, what: str) -> Image.Image:
    """The decoded image in `data`, or an InputError naming `what` (e.g. "drawing")."""
    unreadable = InputError(400, f"The {what} is not a readable image.")
    too_big = f"The {what} is over the limit of {MAX_PIXELS:,} pixels."
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(413, too_big) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise unreadable from None
    if image.width * image.height > MAX_PIXELS:
        raise InputError(413, too_big)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise unreadable from None
    return image


def _drawing_bytes(body: bytes) -> bytes:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InputError(400, "The request body is not valid JSON.") from None
    url = doc.get("image") if isinstance(doc, dict) else None
    head, _, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise InputError(400, 'The JSON body needs "image": a data URL such as "data:image/png;base64,...".')
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, "The drawing's data URL is not valid base64.") from None


def _png_data_url(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Recognizer:
    """A checkpoint's model, loaded once; calls run one at a time (each uses all of torch's threads)."""

    def __init__(self, checkpoint: Path, device=None):
        from hwr.train import pick_device

        self.checkpoint = find_checkpoint(checkpoint)
        self.device = device or pick_device()
        self.model, self.image_size = load_model(self.checkpoint, self.device)
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image, start: float) -> dict:
        """The top characters for a page; "ms" counts from `start` (time.perf_counter())."""
        x = preprocess(image, self.image_size)
        with self._lock:
            top = top_k(self.model, x[None], TOP)[0]
        ms = (time.perf_counter() - start) * 1000
        return {"top": [{"char": c, "p": p} for c, p in top], "input": _png_data_url(x), "ms": round(ms, 1)}

    def drawing(self, body: bytes) -> dict:
        start = time.perf_counter()
        return self(to_page(open_image(_drawing_bytes(body), "drawing")), start)

    def upload(self, body: bytes) -> dict:
        start = time.perf_counter()
        return self(open_image(body, "upload"), start)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to be over `limit` bytes."""
    too_big = InputError(413, f"The request body is over the limit of {limit:,} bytes.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _label(path: Path) -> str:
    """A checkpoint's path for the page: relative to the working directory if under it, else its last parts."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(Path("...", *path.parts[-3:]))


def create_app(checkpoint: Path, *, device=None, max_bytes: int = MAX_BYTES) -> Starlette:
    """The Starlette app of `hwr serve` on one checkpoint (see find_checkpoint for what it may name)."""
    recognizer = Recognizer(checkpoint, device)
    page = resources.files("hwr").joinpath("static/draw.html").read_text(encoding="utf-8")
    info = {"checkpoint": _label(recognizer.checkpoint), "image_size": recognizer.image_size,
            "device": str(recognizer.device), "page": PAGE, "stroke": STROKE[1], "max_bytes": max_bytes}

    def endpoint(kind: str, wanted: str, read):
        async def handle(request: Request) -> JSONResponse:
            try:
                ctype = _content_type(request)
                if not (ctype.startswith(wanted) if wanted.endswith("/") else ctype == wanted):
                    raise InputError(415, f"Send the {kind} as {wanted}{'*' if wanted.endswith('/') else ''}, "
                                          f"not {ctype or 'a body without a content type'}.")
                body = await _body(request, max_bytes)
                # Decoding and inference run in a worker thread: the event loop keeps serving.
                return JSONResponse(await asyncio.to_thread(read, body))
            except InputError as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
        return handle

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def model_info(request: Request) -> JSONResponse:
        return JSONResponse(info)

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/info", model_info),
        Route("/api/drawing", endpoint("drawing", "application/json", recognizer.drawing), methods=["POST"]),
        Route("/api/image", endpoint("image", "image/", recognizer.upload), methods=["POST"]),
    ])
    app.state.recognizer = recognizer
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise ServeError(f"Cannot listen on {host}:{port} ({e.strerror or e}); choose another --host or --port.") \
            from None


def exposure_warning(host: str) -> str | None:
    """The warning `hwr serve` prints when `host` lets other machines in (None for a loopback address)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if loopback:
        return None
    return (f"hwr serve: warning: --host {host} lets other machines reach this page; it has no authentication "
            "and no TLS.")


def _url(host: str, sock: socket.socket) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}/"


def _server(app: Starlette):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning"))


def serve(checkpoint: Path, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = MAX_BYTES) -> None:
    """Serve the page until Ctrl+C."""
    app = create_app(checkpoint, max_bytes=max_bytes)
    sock = bind(host, port)
    if warning := exposure_warning(host):
        print(warning, file=sys.stderr, flush=True)
    rec = app.state.recognizer
    print(f"Serving {rec.checkpoint} ({rec.image_size} px, {rec.device}) on {_url(host, sock)} "
          "(Ctrl+C stops it)", flush=True)
    try:
        _server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl+C, then raises it again for the caller
        print("Stopped.", flush=True)


@contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread while the block runs (tests, benchmarks); yields its URL."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise ServeError(f"The server on {_url(host, sock)} stopped while starting.")
            time.sleep(0.01)
        yield _url(host, sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = ["InkStats", "InputError", "Recognizer", "ServeError", "bind", "create_app", "exposure_warning",
           "ink_stats", "page_stats", "running", "serve", "stroke_width", "to_page"]
