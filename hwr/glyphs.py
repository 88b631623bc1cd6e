"""Labelled glyphs rendered offline, and augmentation that makes them look like Chars74K's handwriting.

Two steps, so that rendering is never the bottleneck of pretraining:

1. `render_bank` draws every (class, font) glyph once into a small binary bitmap (`GlyphBank`): outline
   fonts through Pillow's FreeType (matplotlib's bundled fonts, or any file fontconfig lists) and the
   Hershey stroke fonts (`hershey-fonts` on PyPI) as pen strokes. A glyph keeps its natural size in
   the font's em, so lower case stays smaller than upper case, and is centred on its ink.
2. `augment` (hwr.augment) turns a batch of bank entries into Chars74K-like images on the fly, in torch:
   stroke width (blur, then a random threshold), a random affine map and an elastic field onto a 4:3
   page (a 1200x900 Chars74K page squashed to a square, as `hwr.data.preprocess` squashes it), 4x
   supersampling then area downscaling, random ink/paper levels, optional blur and noise.

Label sets: `disjoint` (the default) holds letters of other scripts and symbols, no Latin letter and no
digit, so a base pretrained on it never saw a target class's code point; `latin62` is the 62 targets
themselves from printed fonts (in-domain pretraining, an ablation). Several Greek and Cyrillic capitals
look like Latin ones (A/Α/А): code points are disjoint, shapes not always; `disjoint-strict` drops every
glyph that renders within a small distance of a target in the same font (see `lookalikes`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hwr.augment import EM_FRACTION, Augment, augment  # noqa: F401 - Augment, augment: named here too
from hwr.data import CLASSES

BANK_SIZE = 64  # side of one glyph bitmap; an em is EM_FRACTION of it
SOURCES = ("matplotlib", "system", "hershey")
LABEL_SETS = ("disjoint", "disjoint-strict", "latin62")


class GlyphError(ValueError):
    """A glyph source or label set cannot be used, explained in one sentence."""


def _chars(*ranges: tuple[int, int]) -> list[str]:
    return [chr(c) for lo, hi in ranges for c in range(lo, hi + 1) if unicodedata.category(chr(c)) != "Cn"]


GREEK = [c for c in _chars((0x391, 0x3A9), (0x3B1, 0x3C9))]
CYRILLIC = _chars((0x410, 0x44F)) + ["Ё", "ё"]
ARMENIAN = _chars((0x531, 0x556), (0x561, 0x586))
GEORGIAN = _chars((0x10D0, 0x10F0))
HEBREW = _chars((0x5D0, 0x5EA))
SYMBOLS = list("&@#%?!§¶*+=<>/\\|~^{}[]()$€£¥¢±×÷√∞≈≠≤≥∑∏∫∂∇∈∩∪⊂∀∃∅¬←↑→↓↔©®†‡•★♠♣♥♦♪")
SCRIPTS = {"greek": GREEK, "cyrillic": CYRILLIC, "armenian": ARMENIAN, "georgian": GEORGIAN,
           "hebrew": HEBREW, "symbols": SYMBOLS}

# Hershey fonts map ASCII positions to their glyphs: Greek in alphabet order on A..X / a..x; Cyrillic
# on its own order (read off the rendered fonts; 'E', which draws an И without its breve, is left out).
_GREEK_UP, _GREEK_LO = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", "αβγδεζηθικλμνξοπρστυφχψω"
_CYR = {**dict(zip("ABCDFGHIJKLMNOPQRSTUVWXYZ", "АБЭДФГЖИЧКЛМНОПШРСТЮВЩХУЗ")),
        **dict(zip("abcdefghijklmnopqrstuvwxyz", "абэдйфгжичклмнопшрстювщхуз")),
        "$": "Ы", "%": "ц", "&": "ы", "[": "Е", "{": "е", "]": "Ъ", "|": "ъ", "^": "Я", "}": "я",
        "_": "Ь", "~": "ь", "`": "Ц"}
_PUNCT = "&@#%?!*+=<>/\\|~^{}[]()$"
HERSHEY_FONTS = {  # font -> {ascii position: character drawn}
    **{f: {**dict(zip("ABCDEFGHIJKLMNOPQRSTUVWX", _GREEK_UP)), **dict(zip("abcdefghijklmnopqrstuvwx", _GREEK_LO))}
       for f in ("greek", "greekc", "greeks")},
    "cyrillic": _CYR, "cyrilc_1": _CYR,
    **{f: {c: c for c in (*CLASSES, *_PUNCT)}
       for f in ("futural", "futuram", "rowmans", "rowmand", "timesr", "timesi", "scripts", "scriptc", "cursive")},
}


@dataclass(frozen=True)
class Font:
    """One glyph source: an outline font file or a Hershey stroke font."""

    kind: str  # "outline" | "hershey"
    name: str  # file name, or the Hershey font's name
    path: str | None
    sha256: str


@dataclass(frozen=True)
class GlyphBank:
    """Binary glyph bitmaps (uint8 [M, G, G], 255 = ink), their class index and font index."""

    masks: np.ndarray
    labels: np.ndarray
    fonts: np.ndarray
    classes: list[str]
    font_list: list[Font]

    def __len__(self) -> int:
        return len(self.labels)


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # cached per file version: fonts are hashed once
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def matplotlib_fonts() -> list[Path]:
    """The fonts matplotlib bundles (found without importing matplotlib, which takes a while)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf").glob("*.ttf"))


def system_fonts() -> list[Path]:
    """Outline font files fontconfig knows (`fc-list`); none where fontconfig is missing."""
    if shutil.which("fc-list") is None:
        return []
    out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=False).stdout
    return sorted({Path(p) for p in out.splitlines() if p.lower().endswith((".ttf", ".otf"))})


# Fonts whose character map does not tell the truth about their shapes: TeX-encoded Computer Modern,
# the last-resort font (one box for every code point) and display/size variants with a handful of glyphs.
_SKIP = ("cm", "LastResort", "STIXSiz", "STIXNonUni", "DejaVuSansDisplay", "DejaVuSerifDisplay")


def outline_fonts(paths: list[Path]) -> list[Font]:
    """Distinct outline fonts among `paths` (same bytes once), skipping fonts whose cmap misleads."""
    seen, out = set(), []
    for p in paths:
        if p.name.startswith(_SKIP):
            continue
        digest = _sha256(p)
        if digest not in seen:
            seen.add(digest)
            out.append(Font("outline", p.name, str(p), digest))
    return out


def hershey_fonts() -> list[Font]:
    try:
        from HersheyFonts import HersheyFonts as module_of_fonts
    except ImportError:
        raise GlyphError("the hershey glyph source needs the hershey-fonts package (pip install Hershey-Fonts).") from None
    # The package holds every font's data in its module file: its hash and the font's name fix the glyphs.
    module = _sha256(Path(sys.modules[module_of_fonts.__module__].__file__))
    return [Font("hershey", name, None, hashlib.sha256(f"{module}:{name}".encode()).hexdigest())
            for name in HERSHEY_FONTS]


def find_fonts(sources: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[Font]:
    """The glyph sources of a recipe: named sources plus extra font files (each must exist)."""
    for s in sources:
        if s not in SOURCES:
            raise GlyphError(f"unknown glyph source {s!r}; known: {', '.join(SOURCES)}.")
    paths: list[Path] = []
    if "matplotlib" in sources:
        paths += matplotlib_fonts()
    if "system" in sources:
        paths += system_fonts()
    for f in extra:
        p = Path(f)
        if not p.is_file():
            raise GlyphError(f"font file {f} does not exist.")
        try:
            ImageFont.truetype(str(p), 12)
        except OSError:
            raise GlyphError(f"font file {f} is not a font Pillow can read.") from None
        paths.append(p)
    fonts = outline_fonts(paths)
    if "hershey" in sources:
        fonts += hershey_fonts()
    if not fonts:
        raise GlyphError(f"no fonts found for the glyph sources {', '.join(sources) or '(none)'}.")
    return fonts


def label_set(kind: str, scripts: tuple[str, ...]) -> list[str]:
    """The characters of a label set: `latin62` is the 62 targets; the disjoint sets the chosen scripts."""
    if kind not in LABEL_SETS:
        raise GlyphError(f"unknown label set {kind!r}; known: {', '.join(LABEL_SETS)}.")
    if kind == "latin62":
        return list(CLASSES)
    out: list[str] = []
    for s in scripts:
        if s not in SCRIPTS:
            raise GlyphError(f"unknown script {s!r}; known: {', '.join(SCRIPTS)}.")
        out += [c for c in SCRIPTS[s] if c not in out]
    targets = set(CLASSES)
    out = [c for c in out if c not in targets]
    if not out:
        raise GlyphError("the label set is empty; name at least one script.")
    return out


@lru_cache(maxsize=None)
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, lazy=True, fontNumber=0) as f:
            return frozenset((f.getBestCmap() or {}).keys())
    except Exception:  # noqa: BLE001 - fontTools raises many types for fonts it cannot parse
        return frozenset()


def _centre(canvas: Image.Image, size: int) -> np.ndarray | None:
    """A size x size binary bitmap of the canvas's ink with its bounding box centred; None when there
    is no ink or it does not fit (a wide symbol)."""
    a = np.asarray(canvas, dtype=np.uint8) > 127
    ys, xs = np.nonzero(a)
    if len(ys) == 0 or ys.max() - ys.min() >= size or xs.max() - xs.min() >= size:
        return None
    out = np.zeros((size, size), dtype=np.uint8)
    top = (size - (ys.max() - ys.min() + 1)) // 2
    left = (size - (xs.max() - xs.min() + 1)) // 2
    out[ys - ys.min() + top, xs - xs.min() + left] = 255
    return out


def _render_outline(font: Font, char: str, size: int) -> np.ndarray | None:
    pil = _pil_font(font.path, round(size * EM_FRACTION))
    canvas = Image.new("L", (size * 3, size * 3), 0)
    ImageDraw.Draw(canvas).text((size * 1.5, size * 1.5), char, fill=255, font=pil, anchor="mm")
    return _centre(canvas, size)


@lru_cache(maxsize=64)
def _pil_font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


@lru_cache(maxsize=None)
def _hershey(name: str):
    from HersheyFonts import HersheyFonts

    hf = HersheyFonts()
    hf.load_default_font(name)
    return hf


def _render_hershey(font: Font, ascii_char: str, size: int) -> np.ndarray | None:
    hf = _hershey(font.name)
    hf.normalize_rendering(size * EM_FRACTION)  # the font's cap height to about 0.7 em, as outline fonts
    canvas = Image.new("L", (size * 3, size * 3), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(size * 0.06))  # a regular pen: about an outline font's stem
    for stroke in hf.strokes_for_text(ascii_char):
        pts = [(size + x, size * 2 - y) for x, y in stroke]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=width, joint="curve")
            for x, y in (pts[0], pts[-1]):  # round pen ends
                draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return _centre(canvas, size)


def render_bank(classes: list[str], fonts: list[Font], size: int = BANK_SIZE,
                min_fonts: int = 1) -> GlyphBank:
    """Every (class, font) glyph the fonts have, as binary bitmaps; classes drawn by fewer than
    `min_fonts` fonts are dropped (their indices renumbered in `classes` order)."""
    index = {c: i for i, c in enumerate(classes)}
    masks, labels, font_ids = [], [], []
    for fi, font in enumerate(fonts):
        if font.kind == "outline":
            cmap = _cmap(font.path)
            todo = [(c, c) for c in classes if ord(c) in cmap]
        else:
            todo = [(a, c) for a, c in HERSHEY_FONTS[font.name].items() if c in index]
        for key, char in todo:
            bitmap = _render_outline(font, char, size) if font.kind == "outline" else _render_hershey(font, key, size)
            if bitmap is not None and bitmap.mean() > 255 * 0.004:  # an empty or nearly empty glyph is a gap
                masks.append(bitmap)
                labels.append(index[char])
                font_ids.append(fi)
    if not masks:
        raise GlyphError("the fonts draw none of the label set's characters.")
    labels_a, fonts_a = np.array(labels), np.array(font_ids)
    counts = np.bincount(labels_a, minlength=len(classes))
    keep_classes = [i for i in range(len(classes)) if counts[i] >= min_fonts]
    if not keep_classes:
        raise GlyphError(f"no class is drawn by {min_fonts} or more fonts.")
    renumber = {old: new for new, old in enumerate(keep_classes)}
    keep = np.isin(labels_a, keep_classes)
    return GlyphBank(
        masks=np.stack(masks)[keep],
        labels=np.array([renumber[v] for v in labels_a[keep]], dtype=np.int64),
        fonts=fonts_a[keep],
        classes=[classes[i] for i in keep_classes],
        font_list=fonts,
    )


def lookalikes(classes: list[str], fonts: list[Font], size: int = 32, threshold: float = 0.2) -> set[str]:
    """Characters of `classes` that, in some outline font, render within `threshold` of one of the 62
    targets, e.g. Greek Α or Cyrillic о and Latin A or o. The distance of two centred binary bitmaps is
    the share of their joint ink that only one of them has (1 - intersection over union)."""
    out = set()
    for font in fonts:
        if font.kind != "outline":
            continue
        cmap = _cmap(font.path)
        targets = [b for t in CLASSES if ord(t) in cmap and (b := _render_outline(font, t, size)) is not None]
        if not targets:
            continue
        t_stack = np.stack(targets) > 0
        for c in classes:
            if c in out or ord(c) not in cmap or (b := _render_outline(font, c, size)) is None:
                continue
            ink = b > 0
            union = (t_stack | ink).sum(axis=(1, 2))
            if ((t_stack ^ ink).sum(axis=(1, 2)) / union).min() < threshold:
                out.add(c)
    return out


def font_report(bank: GlyphBank) -> list[dict]:
    """Each font used, with its hash and how many glyphs it gave (for the base's sidecar)."""
    counts = np.bincount(bank.fonts, minlength=len(bank.font_list))
    return [{"kind": f.kind, "name": f.name, "sha256": f.sha256, "glyphs": int(n)}
            for f, n in zip(bank.font_list, counts) if n > 0]


__all__ = ["Augment", "Font", "GlyphBank", "GlyphError", "LABEL_SETS", "SOURCES", "augment", "find_fonts",
           "font_report", "label_set", "lookalikes", "render_bank"]
