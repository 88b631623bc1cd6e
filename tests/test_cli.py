import csv
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from hwr.cli import main
from hwr.train import CHECKPOINT_FILE, load_checkpoint, save_checkpoint

from conftest import TINY


def sets(*extra):
    out = []
    for item in list(TINY) + list(extra):
        out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["train", *sets("train.epochs=2"), "--out", str(out)]) == 0
    return out


def test_train_writes_history_summary_and_checkpoint(trained, capsys):
    with open(trained / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    summary = json.loads((trained / "summary.json").read_text())
    assert set(summary) >= {"test_acc", "test_loss", "best_epoch", "diverged", "config"}
    assert summary["config"]["model"]["weights"] == "none" and summary["diverged"] is False
    assert (trained / CHECKPOINT_FILE).exists()


def test_train_again_resumes_instead_of_starting_over(trained, capsys):
    before = (trained / "history.csv").read_text()
    assert main(["train", *sets("train.epochs=2"), "--out", str(trained)]) == 0
    assert "epoch   1/2" not in capsys.readouterr().out  # nothing re-trained
    assert (trained / "history.csv").read_text().splitlines()[1].split(",")[:2] == before.splitlines()[1].split(",")[:2]


def test_predict_prints_top3(trained, tmp_path, capsys, cache_dir):
    image = next((cache_dir / "synthetic-seed0").rglob("img011-001.png"))  # an 'A'
    assert main(["predict", str(trained / CHECKPOINT_FILE), str(image), str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    parts = lines[0].split(": ", 1)[1].split()
    chars, probs = parts[0::2], [float(p) for p in parts[1::2]]
    assert len(chars) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "model.activaton=relu"], "model.activaton"),
        (["--set", "model.activation=sleu"], "sleu"),
        (["--set", "train.lr=0"], "train.lr"),
        (["--set", "train.epochs=0"], "train.epochs"),
        (["--set", "data.dataset=chars74k", "--set", "data.root=/nonexistent/chars"], "/nonexistent/chars"),
    ],
)
def test_bad_train_input_is_one_sentence_and_exit_2(extra, named, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(["train", *sets(), *extra, "--out", str(out)], capsys)
    assert code == 2
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_bad_config_file_is_named(tmp_path, capsys):
    code, err = run_cli(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "nope.yaml" in err


def test_unreadable_image(trained, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    code, err = run_cli(["predict", str(trained / CHECKPOINT_FILE), str(bad)], capsys)
    assert code == 2 and "bad.png" in err
    code, err = run_cli(["predict", str(trained / CHECKPOINT_FILE), str(tmp_path / "none.png")], capsys)
    assert code == 2 and "none.png" in err


def test_checkpoint_of_another_shape(trained, tmp_path, capsys):
    state = load_checkpoint(trained / CHECKPOINT_FILE)
    state["config"]["data"]["image_size"] = 64  # head weights are for 32 px: 512 inputs, not 2048
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 30), "white").save(img)
    code, err = run_cli(["predict", str(other), str(img)], capsys)
    assert code == 2 and "do not fit" in err and len(err.splitlines()) == 1
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    code, err = run_cli(["predict", str(junk), str(img)], capsys)
    assert code == 2 and "junk.pt" in err


def test_data_info_on_the_synthetic_set(cache_dir, capsys):
    root = cache_dir / "synthetic-seed0"
    assert main(["data", "info", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "classes: 62" in out and "images:  620" in out and "413/103/104" in out
    code, err = run_cli(["data", "info", "--data-dir", "/nonexistent/x"], capsys)
    assert code == 2 and "/nonexistent/x" in err


@pytest.mark.realdata
def test_data_info_on_the_real_set(real_data_dir):
    out = subprocess.run([sys.executable, "-m", "hwr", "data", "info", "--data-dir", str(real_data_dir)],
                         capture_output=True, text=True, check=True).stdout
    assert "classes: 62" in out and "images:  3410" in out and "2273/569/568" in out


def test_console_scripts_exit_2_on_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hwr", "train", "--set", "model.activation=sleu", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("hwr: error:") and "sleu" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr and "Traceback" not in proc.stderr
