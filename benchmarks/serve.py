"""`hwr-bench serve CHECKPOINT...`: latency of `hwr serve` per prediction, as a client on this machine sees it.

For each checkpoint: the app on 127.0.0.1 (uvicorn in a thread, as `hwr serve` runs it), a few warm-up
requests, then N drawings (a 600x450 canvas PNG as JSON, through `to_page`) and N uploads of the same
PNG, one at a time. Prints the median and 90th percentile of the round trip and the server's own time
(decode, `to_page` for drawings, preprocess and the model). Measures and prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time

from benchmarks.common import BenchError


def canvas_png() -> bytes:
    """A character drawn on the page's 600x450 canvas, about as big and as thick as the page draws it."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (600, 450), "white")
    font = ImageFont.load_default(size=230)
    ImageDraw.Draw(image).text((300, 225), "A", fill="black", font=font, anchor="mm", stroke_width=12,
                               stroke_fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def measure(checkpoint: str, n: int, warmup: int = 3) -> list[dict]:
    import requests

    from hwr.serve import create_app, running

    png = canvas_png()
    kinds = {
        "drawing": ("api/drawing", {"json": {"image": "data:image/png;base64," + base64.b64encode(png).decode()}}),
        "upload": ("api/image", {"data": png, "headers": {"Content-Type": "image/png"}}),
    }
    app = create_app(checkpoint)
    rec = app.state.recognizer
    rows = []
    with running(app) as url, requests.Session() as http:
        for kind, (route, kwargs) in kinds.items():
            trips, server = [], []
            for i in range(warmup + n):
                t = time.perf_counter()
                answer = http.post(url + route, timeout=120, **kwargs)
                elapsed = (time.perf_counter() - t) * 1000
                if answer.status_code != 200:
                    raise BenchError(f"{route} answered {answer.status_code}: {answer.text}")
                if i >= warmup:
                    trips.append(elapsed)
                    server.append(answer.json()["ms"])
            q = statistics.quantiles(trips, n=10)
            rows.append({"checkpoint": checkpoint, "image_size": rec.image_size, "device": str(rec.device),
                         "kind": kind, "n": n, "median_ms": statistics.median(trips), "p90_ms": q[-1],
                         "server_median_ms": statistics.median(server)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwr-bench serve", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoints, run folders, trial or experiment folders")
    ap.add_argument("--requests", type=int, default=50, help="measured requests per kind (default 50)")
    args = ap.parse_args(argv)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print(f"{'size':>5} {'device':>6} {'kind':>8} {'median ms':>10} {'p90 ms':>8} {'server ms':>10}  checkpoint")
    for checkpoint in args.checkpoints:
        for r in measure(checkpoint, args.requests):
            print(f"{r['image_size']:>5} {r['device']:>6} {r['kind']:>8} {r['median_ms']:>10.1f} {r['p90_ms']:>8.1f} "
                  f"{r['server_median_ms']:>10.1f}  {r['checkpoint']}", flush=True)
    return 0
