"""Augmentation that makes printed glyphs look like Chars74K's handwriting, vectorised in torch: stroke
width (blur, then a random threshold), a random affine map and an elastic field onto a 4:3 page (a
1200x900 Chars74K page squashed to a square, as `hwr.data.preprocess` squashes it), 4x supersampling then
area downscaling, random ink/paper levels, optional blur and noise. A leaf module (torch only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EM_FRACTION = 0.8  # a glyph bitmap's em is this share of its side (hwr.glyphs renders them so)

@dataclass(frozen=True)
class Augment:
    """How printed glyphs are made to look handwritten (ranges are uniform unless stated). The defaults
    match Chars74K at 32 px: a character about half the page high, strokes about 2 px, pure white paper."""

    height: tuple[float, float] = (0.5, 0.9)  # an em's height as a share of the page height
    rotation: float = 12.0  # degrees, +-
    shear: float = 0.3  # +-
    stretch: float = 0.25  # x/y aspect change, log-uniform +-
    shift: float = 0.08  # of the page, +-
    stroke: tuple[float, float] = (0.2, 0.6)  # threshold on the blurred glyph: low = thick, high = thin
    elastic: float = 0.04  # displacement amplitude, in page units (a smooth random field)
    ink: tuple[float, float] = (0.0, 30.0)  # grey level of the ink
    paper: tuple[float, float] = (245.0, 255.0)  # grey level of the page
    blur: float = 0.5  # probability of a light extra blur
    noise: float = 2.0  # std of added pixel noise, grey levels


def _gaussian(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = _gaussian(sigma)
    r = len(k) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


PAGE_ASPECT = 900 / 1200  # a Chars74K page is 1200x900; preprocessing squashes it to a square


def augment(masks: torch.Tensor, aug: Augment, out_size: int, g: torch.Generator,
            supersample: int = 4) -> torch.Tensor:
    """uint8 [B, G, G] glyph bitmaps -> uint8 [B, S, S] Chars74K-like pages (dark ink on light paper)."""
    b = masks.shape[0]
    x = masks.float().unsqueeze(1) / 255
    # Stroke width: blur the binary glyph, threshold it at a random level per image.
    soft = _blur(x, masks.shape[-1] / 40)
    t = _uniform(g, b, *aug.stroke).view(b, 1, 1, 1)
    ink = torch.clamp((soft - t) * 8 + 0.5, 0, 1)

    # Page coordinates (u, v) in [-1, 1]^2 -> glyph coordinates, through the inverse of
    # page <- squash(4:3) <- shift <- rotate <- shear <- stretch <- scale <- glyph.
    big = out_size * supersample
    h = _uniform(g, b, *aug.height) / EM_FRACTION  # the glyph bitmap's side as a share of page height
    angle = _uniform(g, b, -aug.rotation, aug.rotation) * math.pi / 180
    shear = _uniform(g, b, -aug.shear, aug.shear)
    stretch = torch.exp(_uniform(g, b, -aug.stretch, aug.stretch))
    shift = _uniform(g, 2 * b, -aug.shift, aug.shift).view(b, 2) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.zeros(b, 2, 2)
    # glyph -> page (in page-height units): R @ Shear @ diag(stretch, 1/stretch) * h
    sx, sy = h * stretch, h / stretch
    forward[:, 0, 0] = (cos * sx)
    forward[:, 0, 1] = (cos * shear - sin) * sy
    forward[:, 1, 0] = sin * sx
    forward[:, 1, 1] = (sin * shear + cos) * sy
    forward[:, 0] *= PAGE_ASPECT  # the page is 4/3 as wide as tall: x shrinks when squashed to a square
    inverse = torch.linalg.inv(forward)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, big), torch.linspace(-1, 1, big), indexing="ij")
    page = torch.stack([xs, ys], -1).view(1, big * big, 2) - shift.view(b, 1, 2)
    if aug.elastic > 0:
        field = torch.randn(b, 2, 4, 4, generator=g) * aug.elastic * 2
        field = F.interpolate(field, size=(big, big), mode="bicubic", align_corners=True)
        page = page + field.permute(0, 2, 3, 1).reshape(b, big * big, 2)
    grid = torch.einsum("bij,bnj->bni", inverse, page).view(b, big, big, 2)
    warped = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = (warped > 0.5).float()  # Chars74K pages are binary before resizing
    small = F.avg_pool2d(warped, supersample)
    if aug.blur > 0:
        blurred = _blur(small, 0.6)
        pick = (torch.rand(b, generator=g) < aug.blur).view(b, 1, 1, 1)
        small = torch.where(pick, blurred, small)
    ink_level = _uniform(g, b, *aug.ink).view(b, 1, 1, 1)
    paper = _uniform(g, b, *aug.paper).view(b, 1, 1, 1)
    img = paper + (ink_level - paper) * small
    if aug.noise > 0:
        img = img + torch.randn(img.shape, generator=g) * aug.noise
    return img.clamp(0, 255).round().to(torch.uint8).squeeze(1)
