"""`hwr-study ARGS` as `study.cli.main(ARGS)` in this process, timed from the call alone (the interpreter's
start and the imports are not counted, as in a driver that is already running); writes
{"rc": exit code, "seconds": ..., "stderr": what it printed there}."""

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import study.run  # noqa: F401  (imported before the clock starts, as `hwr-study run` does before its work)
from study.cli import main

out, *args = sys.argv[1:]
err = io.StringIO()
start = time.monotonic()
with contextlib.redirect_stderr(err):
    rc = main(args)
Path(out).write_text(json.dumps({"rc": rc, "seconds": time.monotonic() - start, "stderr": err.getvalue()}))
