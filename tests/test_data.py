"""hwr.data: layouts, checks, safe extraction, download, splits, the array cache, the synthetic set."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hwr.data.arrays as arrays_mod
import hwr.data.chars74k as chars74k_mod
import hwr.data.fetch as fetch_mod
from hwr.data import (
    CLASSES,
    NUM_CLASSES,
    OFFICIAL_URL,
    DataError,
    Dataset,
    DatasetInfo,
    cache_file,
    default_cache_dir,
    download,
    ensure_dataset,
    find_root,
    load_dataset,
    load_manifest,
    make_splits,
    preprocess,
    safe_extract,
    scan,
    verify,
    write_synthetic,
)

PER_CLASS = 3


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A synthetic set (62 x PER_CLASS) that no test modifies."""
    return write_synthetic(tmp_path_factory.mktemp("pristine") / "set", per_class=PER_CLASS, seed=0)


@pytest.fixture
def synth(pristine, tmp_path) -> Path:
    """A private, modifiable copy of the pristine synthetic set."""
    root = tmp_path / "set"
    shutil.copytree(pristine, root)
    return root


def img(root: Path, label: int, writer: int) -> Path:
    return root / "English" / "Hnd" / "Img" / f"Sample{label + 1:03d}" / f"img{label + 1:03d}-{writer:03d}.png"


def make_kaggle(original: Path, dest: Path) -> Path:
    """The Kaggle re-publication of an original-layout set: english.csv + Img/imgNNN-MMM.png."""
    (dest / "Img").mkdir(parents=True)
    with open(dest / "english.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for s in scan(original):
            shutil.copy2(s.path, dest / "Img" / s.path.name)
            w.writerow([f"Img/{s.path.name}", CLASSES[s.label]])
    return dest


def fake_manifest(root: Path) -> dict[str, str]:
    return {s.path.name: chars74k_mod.sha256_file(s.path) for s in scan(root)}


# ---------------------------------------------------------------- classes, paths


def test_classes_order_and_length():
    assert NUM_CLASSES == len(CLASSES) == 62
    assert len(set(CLASSES)) == 62
    assert CLASSES[:10] == tuple("0123456789")
    assert CLASSES[10] == "A" and CLASSES[35] == "Z"
    assert CLASSES[36] == "a" and CLASSES[61] == "z"
    assert issubclass(DataError, ValueError)


def test_cache_dir_and_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("HWR_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HWR_DATA_DIR", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "hwr"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hwr"
    monkeypatch.setenv("HWR_CACHE_DIR", str(tmp_path / "hc"))
    assert default_cache_dir() == tmp_path / "hc"
    assert find_root() == tmp_path / "hc" / "chars74k"
    monkeypatch.setenv("HWR_DATA_DIR", str(tmp_path / "env"))
    assert find_root() == tmp_path / "env"
    assert find_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert find_root(str(tmp_path / "s")) == tmp_path / "s"


# ---------------------------------------------------------------- scan


def test_scan_original_layout(pristine):
    samples = scan(pristine)
    assert len(samples) == NUM_CLASSES * PER_CLASS
    assert [(s.label, s.writer) for s in samples] == sorted((s.label, s.writer) for s in samples)
    assert {s.label for s in samples} == set(range(NUM_CLASSES))
    assert {s.writer for s in samples} == set(range(1, PER_CLASS + 1))
    s = samples[PER_CLASS * 36 + 1]  # class 'a', writer 2
    assert s.path == img(pristine, 36, 2) and CLASSES[s.label] == "a" and s.writer == 2
    # The Hnd and the Img directory are accepted as roots too.
    hnd = pristine / "English" / "Hnd"
    for root in (hnd, hnd / "Img"):
        assert [(x.label, x.writer, x.path.name) for x in scan(root)] == [
            (x.label, x.writer, x.path.name) for x in samples
        ]


def test_scan_kaggle_layout(pristine, tmp_path):
    root = make_kaggle(pristine, tmp_path / "kaggle")
    got = scan(root)
    want = scan(pristine)
    assert [(s.label, s.writer, s.path.name) for s in got] == [(s.label, s.writer, s.path.name) for s in want]
    assert all(s.path.parent == root / "Img" for s in got)
    info = verify(root)
    assert info.layout == "kaggle" and info.num_images == len(want)


def test_scan_kaggle_unknown_label(pristine, tmp_path):
    root = make_kaggle(pristine, tmp_path / "kaggle")
    text = (root / "english.csv").read_text().replace("Img/img001-002.png,0", "Img/img001-002.png,#")
    (root / "english.csv").write_text(text)
    with pytest.raises(DataError, match=r"unknown label '#'"):
        scan(root)


def test_scan_ignores_stray_files(synth):
    before = scan(synth)
    folder = img(synth, 0, 1).parent
    for name in (".DS_Store", "Thumbs.db", "img001-001.png~", "notes.txt", "._img001-001.png"):
        (folder / name).write_bytes(b"junk")
    (synth / "English" / "Hnd" / "Img" / ".DS_Store").write_bytes(b"junk")
    (synth / "English" / "Hnd" / "Img" / "all.txt~").write_bytes(b"junk")
    assert scan(synth) == before


def test_scan_unexpected_name(synth):
    bad = img(synth, 4, 1).parent / "scan0001.png"
    shutil.copy(img(synth, 4, 1), bad)
    with pytest.raises(DataError, match="scan0001.png"):
        scan(synth)


def test_scan_file_in_wrong_class_folder(synth):
    moved = img(synth, 5, 1).parent / "img001-009.png"
    shutil.copy(img(synth, 0, 1), moved)
    with pytest.raises(DataError, match="img001-009.png"):
        scan(synth)


def test_scan_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        scan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither"):
        scan(tmp_path / "empty")


# ---------------------------------------------------------------- verify


def test_verify_ok(synth):
    info = verify(synth, expected_per_class=PER_CLASS)
    assert info == DatasetInfo(synth, "original", 62, 62 * PER_CLASS, (PER_CLASS,) * 62)


def test_verify_names_corrupt_png(synth):
    bad = img(synth, 20, 2)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert len(scan(synth)) == 62 * PER_CLASS  # still listed, so only decoding can catch it
    with pytest.raises(DataError, match=str(bad)):
        verify(synth)
    verify(synth, decode=False)  # the counts alone are fine


def test_verify_missing_class(synth):
    shutil.rmtree(img(synth, 36, 1).parent)
    with pytest.raises(DataError, match=r"'a' \(Sample037\)"):
        verify(synth)


def test_verify_uneven_counts(synth):
    img(synth, 7, 2).unlink()
    with pytest.raises(DataError, match="uneven"):
        verify(synth)


def test_verify_expected_per_class(synth):
    with pytest.raises(DataError, match=f"{PER_CLASS} images per class, expected 55"):
        verify(synth, expected_per_class=55)


def test_verify_manifest(synth, monkeypatch):
    manifest = fake_manifest(synth)
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: manifest)
    assert verify(synth, manifest=True).num_images == len(manifest)

    # Same size, different bytes: a mismatch, named (manifest=None checks since the counts agree).
    victim = img(synth, 40, 3)
    Image.new("RGB", (96, 72), "white").save(victim)
    with pytest.raises(DataError, match=f"{victim}.*sha256"):
        verify(synth)
    verify(synth, manifest=False)  # still a decodable, balanced set

    # A file the manifest lists is missing.
    manifest[victim.name] = chars74k_mod.sha256_file(victim)
    gone = img(synth, 3, 1)
    gone.unlink()
    with pytest.raises(DataError, match="img004-001.png.*manifest"):
        verify(synth, manifest=True)

    # A file the manifest does not list.
    del manifest[gone.name]
    extra = img(synth, 3, 7)
    shutil.copy(img(synth, 3, 2), extra)
    with pytest.raises(DataError, match=f"{extra}.*not in the manifest"):
        verify(synth, manifest=True)


def test_verify_auto_manifest_only_at_full_count(synth, monkeypatch):
    manifest = fake_manifest(synth)
    manifest.pop(img(synth, 0, 1).name)  # one entry short: auto mode leaves the manifest alone
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: manifest)
    verify(synth)
    with pytest.raises(DataError, match="img001-001.png"):
        verify(synth, manifest=True)


def test_shipped_manifest():
    manifest = load_manifest()
    assert len(manifest) == 3410
    assert manifest["img001-001.png"] == "9bcda3b29e45142aaf7060fd7172c72e4d4482214bdc696c0b00862cea0bd5f4"
    assert {name[3:6] for name in manifest} == {f"{i:03d}" for i in range(1, 63)}


# ---------------------------------------------------------------- safe_extract


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"ok") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info, None


@pytest.mark.parametrize(
    "evil, why",
    [
        (_file("/tmp/hwr-evil.txt"), "absolute"),
        (_file("English/../../evil.txt"), r"'\.\.'"),
        (_link("English/link", "/etc/passwd", tarfile.SYMTYPE), "symbolic link"),
        (_link("English/hard", "English/a.txt", tarfile.LNKTYPE), "hard link"),
        (_device("English/null"), "device"),
    ],
)
def test_safe_extract_refuses(tmp_path, evil, why):
    archive = _tar(tmp_path / "evil.tgz", [_file("English/a.txt"), evil])
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=f"{evil[0].name!r}.*{why}"):
        safe_extract(archive, dest)
    assert not dest.exists()  # nothing extracted, not even the clean member before it
    assert not (tmp_path.parent / "evil.txt").exists()


def test_safe_extract_clean(tmp_path):
    archive = _tar(tmp_path / "ok.tgz", [_file("English/Hnd/a.txt", b"A"), _file("./b.txt", b"B")])
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "English" / "Hnd" / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"B"


def test_safe_extract_not_a_tar(tmp_path):
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(DataError, match="junk.tgz"):
        safe_extract(junk, tmp_path / "out")


# ---------------------------------------------------------------- download, ensure_dataset


@pytest.fixture(scope="module")
def full_synth(tmp_path_factory) -> Path:
    """A synthetic set with the real set's shape (62 x 55), tiny images."""
    return write_synthetic(tmp_path_factory.mktemp("full") / "set", per_class=55, size=(16, 12), seed=3)


def _archive_of(root: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.add(root / "English", arcname="English")
    return path


def test_download_file_url(full_synth, tmp_path, monkeypatch):
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: fake_manifest(full_synth))
    archive = _archive_of(full_synth, tmp_path / "EnglishHnd.tgz")
    root = tmp_path / "data" / "chars74k"
    assert download(root, url=archive.as_uri(), archive_sha256=chars74k_mod.sha256_file(archive)) == root
    assert verify(root, expected_per_class=55).num_images == 3410
    assert [p.name for p in root.parent.iterdir()] == ["chars74k"]  # staging cleaned up


def test_download_into_existing_empty_dir(full_synth, tmp_path, monkeypatch):
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: fake_manifest(full_synth))
    archive = _archive_of(full_synth, tmp_path / "EnglishHnd.tgz")
    root = tmp_path / "data"
    root.mkdir()
    download(root, url=archive.as_uri())
    assert len(scan(root)) == 3410
    with pytest.raises(DataError, match="already exists"):
        download(root, url=archive.as_uri())


def test_download_rejects_tampered_archive(full_synth, tmp_path, monkeypatch):
    monkeypatch.setattr(chars74k_mod, "load_manifest", lambda: fake_manifest(full_synth))
    tampered = tmp_path / "tampered"
    shutil.copytree(full_synth, tampered)
    Image.new("RGB", (16, 12), "black").save(img(tampered, 9, 9))
    archive = _archive_of(tampered, tmp_path / "EnglishHnd.tgz")
    root = tmp_path / "data" / "chars74k"
    with pytest.raises(DataError, match=r"not the genuine.*img010-009\.png.*sha256"):
        download(root, url=archive.as_uri())
    assert not root.exists()
    assert list(root.parent.iterdir()) == []  # no half-extracted tree anywhere

    good = _archive_of(full_synth, tmp_path / "good.tgz")
    with pytest.raises(DataError, match="expected sha256"):
        download(root, url=good.as_uri(), archive_sha256="0" * 64)
    assert list(root.parent.iterdir()) == []


def test_download_network_error_is_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def offline(url, root, filename=None, md5=None, max_redirect_hops=3):
        calls.append((url, filename))
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(DataError, match="EnglishHnd.tgz.*network unreachable"):
        download(tmp_path / "data" / "chars74k")
    assert calls == [(OFFICIAL_URL, "EnglishHnd.tgz")]
    assert list((tmp_path / "data").iterdir()) == []


def test_ensure_dataset(pristine, tmp_path, monkeypatch):
    monkeypatch.delenv("HWR_DATA_DIR", raising=False)
    assert ensure_dataset(pristine, download_missing=False) == pristine
    monkeypatch.setenv("HWR_DATA_DIR", str(pristine))
    assert ensure_dataset(download_missing=False) == pristine

    empty = tmp_path / "empty"
    with pytest.raises(DataError, match=rf"{empty}.*--data-dir.*HWR_DATA_DIR.*hwr data download"):
        ensure_dataset(empty, download_missing=False)
    fetched = []
    monkeypatch.setattr(fetch_mod, "download", lambda root: fetched.append(root) or root)
    assert ensure_dataset(empty) == empty and fetched == [empty]


# ---------------------------------------------------------------- splits

LABELS = np.repeat(np.arange(62), 55)
WRITERS = np.tile(np.arange(1, 56), 62)


def _check_partition(s, n):
    allidx = np.concatenate([s.train, s.val, s.test])
    assert len(allidx) == n and len(np.unique(allidx)) == n and allidx.min() == 0 and allidx.max() == n - 1
    for part in (s.train, s.val, s.test):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)


def test_paper_split_sizes_and_stratification():
    s = make_splits(LABELS, WRITERS, "paper", seed=0)
    assert s.sizes() == (2273, 569, 568)
    _check_partition(s, 3410)
    for part, total in zip((s.train, s.val, s.test), s.sizes()):
        per_class = np.bincount(LABELS[part], minlength=62)
        assert np.all(np.abs(per_class - 55 * total / 3410) < 1)


def test_paper_split_uneven_classes():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), rng.integers(3, 40, size=20))
    rng.shuffle(labels)
    n = len(labels)
    s = make_splits(labels, np.arange(n), "paper", seed=5)
    want = (round(n * 2273 / 3410), round(n * 569 / 3410))
    assert s.sizes() == (*want, n - sum(want))
    _check_partition(s, n)
    sizes = np.bincount(labels)
    for part, total in zip((s.train, s.val, s.test), s.sizes()):
        assert np.all(np.abs(np.bincount(labels[part], minlength=20) - sizes * total / n) < 1)


def test_split_deterministic_by_seed():
    for scheme in ("paper", "writer"):
        a = make_splits(LABELS, WRITERS, scheme, seed=0)
        b = make_splits(LABELS, WRITERS, scheme, seed=0)
        c = make_splits(LABELS, WRITERS, scheme, seed=1)
        assert all(np.array_equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)))
        assert not np.array_equal(a.test, c.test)


def test_writer_split():
    s = make_splits(LABELS, WRITERS, "writer", seed=0)
    _check_partition(s, 3410)
    parts = [set(WRITERS[p]) for p in (s.train, s.val, s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert s.sizes() == (37 * 62, 9 * 62, 9 * 62)  # the closest whole-writer totals to 2273/569/568
    # Writers of unequal size: still whole writers, totals within one writer of the targets.
    rng = np.random.default_rng(0)
    writers = np.repeat(np.arange(40), rng.integers(5, 30, size=40))
    s = make_splits(np.zeros(len(writers), int), writers, "writer", seed=2)
    _check_partition(s, len(writers))
    parts = [set(writers[p]) for p in (s.train, s.val, s.test)]
    assert sum(len(p) for p in parts) == 40
    targets = (round(len(writers) * 2273 / 3410), round(len(writers) * 569 / 3410))
    targets = (*targets, len(writers) - sum(targets))
    assert all(abs(a - b) < 30 for a, b in zip(s.sizes(), targets))


def test_split_unknown_scheme():
    with pytest.raises(DataError, match="'random'"):
        make_splits(LABELS, WRITERS, "random")
    with pytest.raises(DataError, match="equal length"):
        make_splits(LABELS, WRITERS[:-1])


# ---------------------------------------------------------------- load_dataset


def _forbid_decoding(monkeypatch):
    def no_open(*args, **kwargs):
        raise AssertionError("a PNG was decoded")

    monkeypatch.setattr(Image, "open", no_open)


def test_load_dataset_and_cache(pristine, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ds = load_dataset(pristine, 32, cache_dir=cache, progress=False)
    assert isinstance(ds, Dataset) and len(ds) == 62 * PER_CLASS
    assert ds.images.shape == (62 * PER_CLASS, 32, 32) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.writers.dtype == np.int64
    assert ds.image_size == 32 and ds.root == str(pristine)
    samples = scan(pristine)
    assert np.array_equal(ds.labels, [s.label for s in samples])
    with Image.open(samples[100].path) as im:
        assert np.array_equal(ds.images[100], preprocess(im, 32))
    assert ds.images.min() < 100 and ds.images.max() == 255  # dark ink on white, grayscale
    assert [p.name for p in cache.iterdir()] == [cache_file(pristine, 32, cache_dir=cache).name]

    _forbid_decoding(monkeypatch)
    again = load_dataset(pristine, 32, cache_dir=cache, progress=False)
    assert np.array_equal(again.images, ds.images) and np.array_equal(again.writers, ds.writers)
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset(pristine, 40, cache_dir=cache, progress=False)  # another size is another key


def test_load_dataset_parallel_matches_serial(pristine, tmp_path):
    one = load_dataset(pristine, 24, cache_dir=tmp_path / "a", progress=False, workers=1)
    two = load_dataset(pristine, 24, cache_dir=tmp_path / "b", progress=False, workers=2)
    assert np.array_equal(one.images, two.images)


def test_cache_key_follows_sources(synth, tmp_path):
    cache = tmp_path / "cache"
    a = cache_file(synth, 32, cache_dir=cache)
    assert a != cache_file(synth, 64, cache_dir=cache)
    assert a == cache_file(synth, 32, cache_dir=cache)
    first = load_dataset(synth, 32, cache_dir=cache, progress=False)
    changed = img(synth, 0, 1)
    Image.new("RGB", (96, 72), "black").save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = cache_file(synth, 32, cache_dir=cache)
    assert b != a
    second = load_dataset(synth, 32, cache_dir=cache, progress=False)
    assert second.images[0].max() == 0 and first.images[0].max() == 255  # re-decoded, not stale


def test_damaged_cache_is_rebuilt(pristine, tmp_path):
    cache = tmp_path / "cache"
    path = cache_file(pristine, 16, cache_dir=cache)
    cache.mkdir()
    path.write_bytes(b"PK\x03\x04 not really a zip")
    ds = load_dataset(pristine, 16, cache_dir=cache, progress=False)
    assert ds.images.shape == (62 * PER_CLASS, 16, 16)
    with np.load(path) as z:
        assert np.array_equal(z["images"], ds.images)


def test_cache_write_is_atomic(pristine, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def half_write(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(arrays_mod.np, "savez", half_write)
    with pytest.warns(UserWarning, match="disk full"):
        ds = load_dataset(pristine, 16, cache_dir=cache, progress=False)
    assert ds.images.shape == (62 * PER_CLASS, 16, 16)  # the data still arrives
    assert list(cache.iterdir()) == []  # neither a partial cache file nor a temporary one


def test_load_dataset_bad_size(pristine):
    with pytest.raises(DataError, match="image_size"):
        load_dataset(pristine, 0, progress=False)


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic(tmp_path):
    a = write_synthetic(tmp_path / "a", per_class=2, seed=7)
    b = write_synthetic(tmp_path / "b", per_class=2, seed=7)
    c = write_synthetic(tmp_path / "c", per_class=2, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 124 and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) > 100
    with Image.open(a / files[0]) as im:
        assert im.size == (96, 72) and im.mode == "RGB"
    with pytest.raises(DataError, match="already exists"):
        write_synthetic(a, per_class=2)


def test_synthetic_is_learnable(tmp_path):
    """Nearest class mean over held-out writers beats chance (1/62) several times over."""
    root = write_synthetic(tmp_path / "s", per_class=8, seed=0)
    ds = load_dataset(root, 16, cache_dir=tmp_path / "cache", progress=False)
    x = ds.images.reshape(len(ds), -1).astype(np.float64)
    x -= x.mean(1, keepdims=True)
    train = ds.writers <= 6
    means = np.stack([x[train & (ds.labels == c)].mean(0) for c in range(62)])
    dist = ((x[~train][:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == ds.labels[~train]).mean()
    assert accuracy > 5 / 62


# ---------------------------------------------------------------- the real set

REAL = os.environ.get("HWR_DATA_DIR")
realdata = pytest.mark.skipif(
    not (REAL and Path(REAL).is_dir()), reason="HWR_DATA_DIR is not set to the Chars74K set"
)


@pytest.mark.realdata
@realdata
def test_real_set_verifies_against_manifest():
    info = verify(REAL, expected_per_class=55, manifest=True)
    assert info.layout == "original"
    assert info.num_images == 3410 and info.num_classes == 62 and info.per_class == (55,) * 62


@pytest.mark.realdata
@realdata
def test_real_set_splits():
    samples = scan(REAL)
    labels = np.array([s.label for s in samples])
    writers = np.array([s.writer for s in samples])
    assert len(samples) == 3410 and np.array_equal(np.bincount(labels), [55] * 62)
    assert set(writers) == set(range(1, 56))
    paper = make_splits(labels, writers, "paper", seed=0)
    assert paper.sizes() == (2273, 569, 568)
    _check_partition(paper, 3410)
    by_writer = make_splits(labels, writers, "writer", seed=0)
    _check_partition(by_writer, 3410)
    parts = [set(writers[p]) for p in (by_writer.train, by_writer.val, by_writer.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


@pytest.mark.realdata
@realdata
def test_real_images_preprocess():
    samples = scan(REAL)
    for s in samples[:: len(samples) // 8]:
        with Image.open(s.path) as im:
            assert im.size == (1200, 900)
            x = preprocess(im, 64)
        assert x.shape == (64, 64) and x.dtype == np.uint8
        assert x.max() == 255 and x.min() < 128  # a dark character on white
