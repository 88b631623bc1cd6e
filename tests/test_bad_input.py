"""Bad input, as a new user would give it: each kind is answered with one sentence naming the file, key or
value at fault, and exit code 2; never a traceback, and nothing half-written.

Each case builds its input in a temporary folder and runs the real command line (`hwr` or `hwr-study`, in
this process); the message it printed goes into the reliability table (docs/reliability.md, written by
`python -m benchmarks.faults`).
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from PIL import Image

from hwr.cli import main as hwr_main
from hwr.data import write_synthetic
from hwr.train import CHECKPOINT_FILE
from study.cli import main as study_main

from conftest import TINY
from study_helpers import write_study


def sets(*items: str) -> list[str]:
    return [a for item in (*TINY, "train.epochs=1", *items) for a in ("--set", item)]


@dataclass(frozen=True)
class Case:
    fault: str
    command: Callable[[Path, dict], tuple[str, list[str]]]  # (tmp, fixtures) -> ("hwr" | "hwr-study", argv)
    names: str | Callable[[Path], str]  # what the sentence must name


def study_yaml(tmp: Path, **change) -> str:
    path = write_study(tmp, "bad")
    doc = yaml.safe_load(path.read_text())
    doc.update(change)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def written(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def set_copy(tmp: Path, fx: dict) -> Path:
    root = tmp / "set"
    shutil.copytree(fx["set"], root)
    return root


def sample(root: Path, label: int, writer: int) -> Path:
    return root / "English" / "Hnd" / "Img" / f"Sample{label:03d}" / f"img{label:03d}-{writer:03d}.png"


def corrupt_png(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    root = set_copy(tmp, fx)
    p = sample(root, 5, 2)
    p.write_bytes(p.read_bytes()[:60])  # a PNG cut short
    return "hwr", ["train", *sets("data.dataset=chars74k", f"data.root={root}"), "--out", str(tmp / "o")]


def text_as_png(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    root = set_copy(tmp, fx)
    sample(root, 7, 1).write_text("these are notes, not an image\n")
    return "hwr", ["data", "verify", "--data-dir", str(root)]


def misnamed(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    root = set_copy(tmp, fx)
    shutil.copy(sample(root, 1, 1), sample(root, 1, 1).parent / "scan 1.png")
    return "hwr", ["data", "info", "--data-dir", str(root)]


def misplaced(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    root = set_copy(tmp, fx)
    shutil.move(sample(root, 2, 1), sample(root, 1, 1).parent / "img002-001.png")
    return "hwr", ["data", "info", "--data-dir", str(root)]


def wrong_layout(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    (tmp / "photos").mkdir()
    Image.new("L", (8, 8)).save(tmp / "photos" / "a.png")
    return "hwr", ["data", "info", "--data-dir", str(tmp / "photos")]


def tar_with(tmp: Path, member: tarfile.TarInfo, data: bytes = b"x") -> str:
    path = tmp / "EnglishHnd.tgz"
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path.as_uri()


def escaping_tar(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    member = tarfile.TarInfo("English/../../escaped.txt")
    member.size = 1
    return "hwr", ["data", "download", "--url", tar_with(tmp, member), "--data-dir", str(tmp / "data")]


def symlink_tar(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    member = tarfile.TarInfo("English/passwd")
    member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return "hwr", ["data", "download", "--url", tar_with(tmp, member), "--data-dir", str(tmp / "data")]


def not_a_tar(tmp: Path, fx: dict) -> tuple[str, list[str]]:
    (tmp / "EnglishHnd.tgz").write_text("<html>404 not found</html>")
    return "hwr", ["data", "download", "--url", (tmp / "EnglishHnd.tgz").as_uri(), "--data-dir", str(tmp / "data")]


def weights_file(tmp: Path, state) -> str:
    torch.save(state, tmp / "w.pt")
    return str(tmp / "w.pt")


class Pickled:
    """Any object other than tensors and containers: weights_only=True refuses to unpickle it."""

    def __reduce__(self):
        return (print, ("this ran while loading weights",))


def checkpoint_copy(tmp: Path, fx: dict) -> str:
    shutil.copy(fx["run"] / CHECKPOINT_FILE, tmp / CHECKPOINT_FILE)
    return str(tmp / CHECKPOINT_FILE)


def an_image(fx: dict) -> str:
    return str(sample(fx["set"], 11, 1))


def fake_experiment(tmp: Path) -> str:
    (tmp / "exp").mkdir()
    (tmp / "exp" / "study.yaml").write_text(yaml.safe_dump({"name": "exp"}))
    return str(tmp / "exp")


def lr_file(tmp: Path) -> str:
    arms = [{"activation": "gelu", "normalization": "none", "lr": 0.01}]
    return written(tmp, "best_lr.yaml", yaml.safe_dump({"arms": arms}))


CASES: dict[str, Case] = {
    # --- config files and --set
    "yaml-syntax": Case("a study config that is not valid YAML",
                        lambda t, fx: ("hwr-study", ["run", written(t, "s.yaml", "name: s\nsearch: {train.seed: [0\n")]),
                        "s.yaml is not valid YAML at line"),
    "yaml-not-mapping": Case("a config file holding a list", lambda t, fx: (
        "hwr", ["train", "--config", written(t, "l.yaml", "- relu\n- selu\n"), "--out", str(t / "o")]),
                             "l.yaml must hold a mapping"),
    "config-missing": Case("a config file that does not exist",
                           lambda t, fx: ("hwr-study", ["run", str(t / "nope.yaml")]), "nope.yaml"),
    "unknown-section": Case("an unknown (misspelt) top-level key", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t, trian={"epochs": 2})]), "Unknown key 'trian'"),
    "unknown-key": Case("an unknown key in a section", lambda t, fx: (
        "hwr", ["train", *sets("model.activaton=relu"), "--out", str(t / "o")]), "model.activaton"),
    "wrong-type": Case("a value of the wrong type", lambda t, fx: (
        "hwr", ["train", *sets("train.epochs=ten"), "--out", str(t / "o")]), "train.epochs must be an integer"),
    "out-of-range": Case("an out-of-range value (lr 0)", lambda t, fx: (
        "hwr", ["train", *sets("train.lr=0"), "--out", str(t / "o")]), "train.lr"),
    "not-finite": Case("an infinite learning rate", lambda t, fx: (
        "hwr", ["train", *sets("train.lr=.inf"), "--out", str(t / "o")]), "train.lr must be a finite number"),
    "negative-seed": Case("a negative split seed", lambda t, fx: (
        "hwr", ["train", *sets("data.split_seed=-1"), "--out", str(t / "o")]), "data.split_seed must be >= 0"),
    "bad-choice": Case("an unknown activation", lambda t, fx: (
        "hwr", ["train", *sets("model.activation=sleu"), "--out", str(t / "o")]), "sleu"),
    "image-size": Case("an image size VGG16 cannot take", lambda t, fx: (
        "hwr", ["train", *sets("data.image_size=100"), "--out", str(t / "o")]), "data.image_size"),
    "override-syntax": Case("a --set without a value", lambda t, fx: (
        "hwr", ["train", *sets("train.epochs"), "--out", str(t / "o")]), "'train.epochs' must look like"),
    "empty-axis": Case("an empty grid axis", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "search.train.seed=[]"]), "search.train.seed"),
    "unknown-axis": Case("a grid axis that is not a config key", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "search.model.activaton=[relu]"]), "model.activaton"),
    "bad-grid-value": Case("an invalid value on a grid axis", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "search.model.activation=[relu, sleu]"]), "sleu"),
    "study-name": Case("a study name with a slash", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "name=a/b"]), "name"),
    "run-settings": Case("negative retries", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "run.max_failures=-1"]), "max_failures"),
    "analysis-key": Case("an unknown analysis parameter", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--set", "analysis.target=0.5"]), "analysis.target"),
    "lr-from-arms": Case("an --lr-from file for other arms", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--lr-from", lr_file(t)]), "has no lr for the arm relu+per_image"),
    "lr-from-junk": Case("an --lr-from file that is not a best-lr file", lambda t, fx: (
        "hwr-study", ["run", study_yaml(t), "--lr-from", written(t, "x.yaml", "lr: [fast]\n")]),
                         "is not a best-lr file"),
    # --- the data set
    "data-dir-missing": Case("a data folder that does not exist", lambda t, fx: (
        "hwr", ["train", *sets("data.dataset=chars74k", f"data.root={t / 'nowhere'}"), "--out", str(t / "o")]),
                             lambda t: str(t / "nowhere")),
    "data-wrong-layout": Case("a data folder in neither Chars74K layout", wrong_layout, "holds neither"),
    "corrupt-png": Case("a PNG cut short in the set (`hwr train`)", corrupt_png,
                        lambda t: str(sample(t / "set", 5, 2))),
    "not-a-png": Case("a text file named like an image in the set (`hwr data verify`)", text_as_png,
                      lambda t: str(sample(t / "set", 7, 1))),
    "misnamed-image": Case("an image not named imgNNN-MMM.png", misnamed, "scan 1.png"),
    "misplaced-image": Case("an image in another class's folder", misplaced, "img002-001.png"),
    "tar-escape": Case("an archive member escaping the target folder (`hwr data download`)", escaping_tar,
                       "has a '..' component"),
    "tar-symlink": Case("an archive member that is a symbolic link", symlink_tar, "is a symbolic link"),
    "not-a-tar": Case("a download that is not a tar archive", not_a_tar, "not a readable tar archive"),
    # --- weights, checkpoints, images
    "weights-missing": Case("a weights file that does not exist", lambda t, fx: (
        "hwr", ["train", *sets(f"model.weights={t / 'none.pt'}"), "--out", str(t / "o")]), "none.pt does not exist"),
    "weights-shapes": Case("a weights file of the wrong shapes", lambda t, fx: (
        "hwr", ["train", *sets(f"model.weights={weights_file(t, {'0.weight': torch.zeros(8, 3, 3, 3)})}"),
                "--out", str(t / "o")]), "is not a VGG16 state dict"),
    "weights-pickle": Case("a weights file holding a pickled object (refused by weights_only)", lambda t, fx: (
        "hwr", ["train", *sets(f"model.weights={weights_file(t, {'x': Pickled()})}"), "--out", str(t / "o")]),
                           "w.pt is not a loadable state dict"),
    "checkpoint-pickle": Case("a checkpoint holding a pickled object", lambda t, fx: (
        "hwr", ["predict", weights_file(t, {"format": 2, "x": Pickled()}), an_image(fx)]), "w.pt cannot be read"),
    "checkpoint-foreign": Case("a checkpoint that is not hwr's", lambda t, fx: (
        "hwr", ["predict", weights_file(t, {"hello": torch.zeros(1)}), an_image(fx)]), "is not an hwr checkpoint"),
    "predict-non-image": Case("`hwr predict` on a file that is not an image", lambda t, fx: (
        "hwr", ["predict", checkpoint_copy(t, fx), written(t, "notes.png", "text")]), "notes.png cannot be read"),
    "predict-missing-image": Case("`hwr predict` on an image that does not exist", lambda t, fx: (
        "hwr", ["predict", checkpoint_copy(t, fx), str(t / "gone.png")]), "gone.png does not exist"),
    "predict-top": Case("`hwr predict --top 99` (there are 62 classes)", lambda t, fx: (
        "hwr", ["predict", checkpoint_copy(t, fx), an_image(fx), "--top", "99"]), "--top must be between 1 and 62"),
    # --- outputs and experiments
    "train-out-unwritable": Case("`hwr train --out` below a file", lambda t, fx: (
        "hwr", ["train", *sets(), "--out", written(t, "f", "") + "/run"]), "is a file, not a folder"),
    "analyze-out-unwritable": Case("`hwr-study analyze --out` below a file", lambda t, fx: (
        "hwr-study", ["analyze", fake_experiment(t), "--out", written(t, "f", "") + "/report"]),
                                   "is a file, not a folder"),
    "analyze-no-experiment": Case("`hwr-study analyze` on a folder with no experiment", lambda t, fx: (
        "hwr-study", ["analyze", str(t)]), "is not an hwr-study experiment"),
    "analyze-not-started": Case("`hwr-study analyze` on an experiment that has not started", lambda t, fx: (
        "hwr-study", ["analyze", fake_experiment(t)]), "holds no Tune experiment state yet"),
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory, tiny_run) -> dict:
    return {"set": write_synthetic(tmp_path_factory.mktemp("bad-input") / "set", per_class=2, seed=0),
            "run": tiny_run}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_naming_it_and_exit_2(case, fixtures, tmp_path, capsys, record_property):
    c = CASES[case]
    cli, argv = c.command(tmp_path, fixtures)
    code = (hwr_main if cli == "hwr" else study_main)(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]  # after any progress bar
    named = c.names(tmp_path) if callable(c.names) else c.names
    assert code == 2 and lines and lines[-1].startswith(f"{cli}: error: "), err[-2000:]
    assert named in lines[-1] and sum(": error: " in line for line in lines) == 1
    assert not (tmp_path / "o").exists()  # nothing half-written
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data").exists()
    record_property("fault", c.fault)
    record_property("outcome", "exit 2: " + lines[-1].split(": error: ", 1)[1].replace(str(tmp_path), "…"))
    record_property("lost", "nothing")


def test_stray_files_in_the_set_are_ignored(fixtures, tmp_path, capsys, record_property):
    """Not an error: files that are not images (.DS_Store, notes) are skipped, as the README says."""
    root = set_copy(tmp_path, fixtures)
    (sample(root, 3, 1).parent / "notes.txt").write_text("scanned on a Tuesday")
    (sample(root, 3, 1).parent / ".DS_Store").write_bytes(b"\0\1")
    assert hwr_main(["data", "info", "--data-dir", str(root)]) == 0
    assert "images:  124" in capsys.readouterr().out
    record_property("fault", "stray non-image files (notes.txt, .DS_Store) in the set")
    record_property("outcome", "ignored, as documented: exit 0, 124 images")
    record_property("lost", "nothing")


@pytest.mark.slow
def test_a_cluster_that_wants_a_token_the_driver_lacks(tmp_path, record_property):
    """A head node with token authentication (as the README sets one up); `hwr-study run` joining it from a
    shell that has no token. The head runs under `ray start --block`, which stops exactly its own processes
    when this test ends it."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    ray_bin = str(Path(sys.executable).parent / "ray")
    home, bare = tmp_path / "home", tmp_path / "bare"
    home.mkdir()
    bare.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token"}
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    port, temp = free_port(), Path("/tmp") / f"ray-tok-{os.getpid()}-{free_port()}"  # Ray wants short socket paths
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--include-dashboard=false", "--num-cpus=1", f"--temp-dir={temp}",
                             "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(temp.glob("session_*/sockets/raylet")) and time.monotonic() < deadline:
            assert head.poll() is None, "ray start failed"
            time.sleep(0.5)
        config = write_study(tmp_path, "tok", seeds=(0,), activations=("relu",), epochs=1)
        proc = subprocess.run([sys.executable, "-m", "study", "run", str(config)], capture_output=True, text=True,
                              env={**env, "HOME": str(bare), "RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=300)
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started, and only those
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hwr-study: error: ") and "auth token" in line
    record_property("fault", "`hwr-study run` joining a token-authenticated cluster without the token")
    record_property("outcome", "exit 2: " + line.split(": error: ", 1)[1])
    record_property("lost", "nothing")
