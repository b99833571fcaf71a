"""From tissue and tumour state to a scan: tumour appearance, mass-effect drift, bias field, noise.

    total = c + n;  tumour opacity o = smoothstep(total; 0.15, 0.45);  halo h = smoothstep(total; 0.02, 0.3)
    tumour intensity T = (c * I_viable + n * I_necrotic) / total * (1 + texture)
    image = lerp(lerp(B(x - u(x)), I_halo, halo_strength * h), T, o)

B is the tumour-free tissue, u the mass-effect displacement (radial, compactly supported, zero
outside ``reach`` mm), I_viable the enhancing viable tumour (so the rim of a tumour with a necrotic
core enhances), I_halo the peritumoural oedema / ground-glass / enhancement. All terms are exactly
zero where total < 0.02 and outside the displacement's reach, so a counterfactual scan differs
from the factual one only there. Scanner effects come last: a multiplicative (MRI) or additive
(CT) smooth bias field per patient and independent noise per scan (Rician for magnitude MRI,
Gaussian for CT and for the breast's DCE subtraction images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from oncodiff.synth.fields import box_around, smoothstep
from oncodiff.synth.growth import MASK_THRESHOLD, TumourState


@dataclass(frozen=True)
class Look:
    """Tumour intensities in the site's units (MRI arbitrary units, CT Hounsfield)."""

    viable: float
    necrotic: float
    halo: float
    halo_strength: float
    texture: float = 0.05


@dataclass(frozen=True)
class Contrast:
    """One MRI sequence (``oncodiff synth --sequences``): how tissue and tumour look in it.

    ``tissue`` maps the T1-weighted tumour-free tissue B (template units, about 0.2 CSF, 0.55 grey and 0.8 white
    matter) to this sequence's tissue: ``a + b B + c B^2`` inside the head (B > 0.05; outside it B is kept), then,
    with ``csf_suppression`` s, times 1 - s (1 - smoothstep(B; 0.25, 0.45)) so CSF-like tissue darkens (FLAIR
    nulls free water). ``look`` is the tumour's appearance: the
    viable rim (enhancing in T1c), the necrotic core (bright in T2), the halo (oedema: bright in T2 and FLAIR).
    """

    name: str
    look: Look
    tissue: tuple[float, float, float] = (0.0, 1.0, 0.0)
    csf_suppression: float = 0.0  # 0: none; 1: CSF-like tissue (B < 0.35) goes to zero

    def render_tissue(self, background: np.ndarray) -> np.ndarray:
        a, b, c = self.tissue
        mapped = a + b * background + c * background * background
        if self.csf_suppression:
            mapped = mapped * (1.0 - self.csf_suppression * (1.0 - smoothstep(background, 0.25, 0.45)))
        return np.where(background > 0.05, mapped, background).astype(np.float32)


def composite(background: np.ndarray, state: TumourState, look: Look, texture: np.ndarray) -> np.ndarray:
    """Tumour drawn onto the tissue; all arrays share shape (*spatial)."""
    total = state.cellularity
    opacity = smoothstep(total, 0.15, 0.45)
    halo = look.halo_strength * smoothstep(total, 0.02, MASK_THRESHOLD)
    tumour = (state.viable * look.viable + state.dead * look.necrotic) / np.maximum(total, 1e-6)
    tumour = tumour * (1.0 + look.texture * texture)
    tissue = background + halo * (look.halo - background)
    return (tissue + opacity * (tumour - tissue)).astype(np.float32)


def radial_drift(
    shape: tuple[int, ...], spacing: tuple[float, ...], center_vox: tuple[float, ...],
    drift_mm: float, inner_mm: float, reach_mm: float,
) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """Mass-effect displacement (PULSAR drift) inside its support box: (box slices, per-axis displacement in voxels).

    u(x) = drift * g(r) * (x - centre) / r with g = r / inner inside the tumour and
    ((reach - r) / (reach - inner))^2 beyond it, zero from ``reach`` on; drift > 0 pushes tissue out.
    |drift| is capped so the map stays one-to-one (slope of drift * g below 1).
    """
    drift_mm = float(np.clip(drift_mm, -0.45 * min(inner_mm, reach_mm - inner_mm),
                             0.45 * min(inner_mm, reach_mm - inner_mm)))
    half = tuple(int(np.ceil(reach_mm / s)) + 1 for s in spacing)
    box = box_around(tuple(int(round(c)) for c in center_vox), half, shape)
    offsets = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
    rel_mm = [(o - c) * s for o, c, s in zip(offsets, center_vox, spacing)]
    r = np.sqrt(sum(x * x for x in rel_mm))
    profile = np.where(r < inner_mm, r / inner_mm, np.clip((reach_mm - r) / (reach_mm - inner_mm), 0, 1) ** 2)
    scale = drift_mm * profile / np.maximum(r, 1e-6)
    return box, [(scale * x / s).astype(np.float32) for x, s in zip(rel_mm, spacing)]


def warp(image: np.ndarray, box: tuple[slice, ...], displacement: list[np.ndarray], order: int = 1) -> np.ndarray:
    """Backward warp out(x) = image(x - u(x)) inside ``box``; voxels outside the box are copied unchanged."""
    out = image.copy()
    grids = np.meshgrid(*[np.arange(b.start, b.stop, dtype=np.float32) for b in box], indexing="ij")
    coords = np.stack([g - u for g, u in zip(grids, displacement)])
    out[box] = ndimage.map_coordinates(image, coords, order=order, mode="nearest")
    return out


def mri_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Rician magnitude noise: |image + sigma (n1 + i n2)|."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def gaussian_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Additive Gaussian noise (CT quantum noise in HU; DCE subtraction images)."""
    return image + sigma * rng.standard_normal(image.shape, dtype=np.float32)


def to_int16(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Round and clip to the stored integer range (scanners store int16)."""
    return np.clip(np.rint(image), low, high).astype(np.int16)
