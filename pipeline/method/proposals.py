"""Training-free object masks: normalized cut on the patch affinity graph (TokenCut / Deep Spectral Methods).

Per image: cosine affinities between patch features, thresholded as in TokenCut (edge 1 above tau,
eps below); the generalized eigenproblem (D - W) v = lambda D v gives bipartitions (eigenvectors
1..num_eigs, the Fiedler vector first); the foreground side is the one that touches the image
border less (proposals.fg_rule border); its connected components are proposals (proposals.components
all), scored by how much more they resemble themselves than the rest; overlapping ones are suppressed;
the survivors are upsampled to pixels and refined with GrabCut on the image colours.

TokenCut-faithful options (read from TokenCut's object_discovery.py `ncut` / `detect_box`, the same in
unsupervised_saliency_detection/): the bipartition is v > mean(v); the seed is argmax |v|; when the seed
is not on the `>` side, TokenCut flips the partition, so the foreground is the side holding the seed
(fg_rule seed); `detect_box` labels that side's 4-connected components (scipy.ndimage.label's default
cross) and keeps only the one containing the seed (components seed). Where we depart: we keep our
Lanczos solver (same eigenvectors as TokenCut's dense generalized `eigh`, up to sign, which the seed rule
does not depend on), eigenvectors beyond the Fiedler one (num_eigs), the min_patches and min_score
filters, NMS, and GrabCut refinement (TokenCut's saliency code uses a bilateral solver instead). With
fg_rule border and components seed, the seed is the foreground side's patch of largest |v|.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.linalg import eigh
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from threadpoolctl import ThreadpoolController

from pipeline.config import ProposalsConfig
from pipeline.method.vectors import unit_rows


@dataclass
class Proposal:
    """One object mask on the patch grid: (h, w) bool, with its score and the eigenvector it came from."""

    patches: np.ndarray
    score: float
    eig: int


def affinity(feats: np.ndarray) -> np.ndarray:
    """Patch features (h, w, D) -> (h*w, h*w) cosine similarities in float64."""
    x = unit_rows(feats.reshape(-1, feats.shape[-1]).astype(np.float64))
    return x @ x.T


def ncut_vectors(sim: np.ndarray, tau: float, eps: float, num_eigs: int) -> np.ndarray:
    """Cosine similarities (n, n) -> (n, num_eigs) generalized eigenvectors 1..num_eigs of (D - W, D).

    W = 1 where sim > tau else eps (TokenCut). Eigenvector 0 is constant and skipped. Solved as the
    largest eigenvectors u of the normalised affinity D^-1/2 W D^-1/2 (v = D^-1/2 u, so v'Dv = 1, as
    the generalized solver normalises): Lanczos (ARPACK) needs only products with W and is 10-100x
    faster than the dense generalized eigensolver at 196-784 patches; tiny graphs use the dense solver, and so
    does a graph where Lanczos does not converge (nearly equal top eigenvalues: features with no structure,
    such as the oracle diagnostic's noise).
    """
    w = np.where(sim > tau, 1.0, eps)
    n = sim.shape[0]
    k = min(num_eigs, n - 1)
    s = 1.0 / np.sqrt(w.sum(1))
    a = s[:, None] * w * s[None, :]
    vals = None
    if k + 2 < n:
        v0 = np.linspace(1.0, 2.0, n)  # fixed start vector: the same input gives the same output
        try:
            vals, u = eigsh(a, k=k + 1, which="LA", v0=v0)
        except ArpackNoConvergence:  # nearly equal top eigenvalues (features with no structure): solve densely
            pass
    if vals is None:
        vals, u = eigh(a)
    order = np.argsort(-vals)[1:k + 1]
    return s[:, None] * u[:, order]


def foreground_side(vec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One eigenvector (h*w,) -> (h, w) bool foreground: of the two sides of the mean split, the one
    covering the smaller share of border patches (ties: the side holding the largest |v|)."""
    side = (vec > vec.mean()).reshape(shape)
    border = np.zeros(shape, bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    a, b = side[border].mean(), (~side)[border].mean()
    if a == b:
        return side if side.reshape(-1)[np.argmax(np.abs(vec))] else ~side
    return side if a < b else ~side


def seed_patch(vec: np.ndarray, side: np.ndarray | None = None) -> int:
    """One eigenvector (n,) -> flat index of its largest |v| entry (TokenCut's seed), among the patches
    where `side` ((n,) or (h, w) bool) is True when given."""
    mag = np.abs(vec)
    if side is not None:
        mag = np.where(side.reshape(-1), mag, -1.0)
    return int(np.argmax(mag))


def seed_side(vec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One eigenvector (h*w,) -> (h, w) bool foreground as TokenCut picks it: of the two sides of the mean
    split, the one holding the seed patch (largest |v|)."""
    side = (vec > vec.mean()).reshape(shape)
    return side if side.reshape(-1)[seed_patch(vec)] else ~side


def seed_component(fg: np.ndarray, vec: np.ndarray, min_size: int) -> list[np.ndarray]:
    """(h, w) bool foreground and its eigenvector (h*w,) -> [the 4-connected component of fg holding the seed
    (fg's patch of largest |v|)] as an (h, w) bool array, or [] when fg is empty or that component has
    fewer than min_size cells (TokenCut's detect_box keeps only this component)."""
    if not fg.any():
        return []
    _, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=4)
    comp = lab == lab.reshape(-1)[seed_patch(vec, fg)]
    return [comp] if comp.sum() >= min_size else []


def contrast_score(sim: np.ndarray, mask: np.ndarray) -> float:
    """Mean similarity inside the mask minus mean similarity between mask and the rest -> float."""
    m = mask.reshape(-1)
    if m.all() or not m.any():
        return 0.0
    return float(sim[np.ix_(m, m)].mean() - sim[np.ix_(m, ~m)].mean())


def components(mask: np.ndarray, min_size: int) -> list[np.ndarray]:
    """(h, w) bool -> its 4-connected components with at least min_size cells, as (h, w) bool arrays."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return [lab == i for i in range(1, n) if (lab == i).sum() >= min_size]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@functools.cache
def _blas_pools() -> ThreadpoolController:
    return ThreadpoolController()  # inspects the loaded BLAS libraries once (numpy's and scipy's are loaded by now)


def one_blas_thread() -> Any:
    """Context: BLAS on one thread. The normalized cut's products (a few hundred to a few thousand patches) run
    faster on one thread than on several (ARPACK's many small matrix-vector products: 900 patches, 9 ms on one
    thread against 27 on two here), and the result is then the same bytes in the stage's process and in its pool
    workers (which run one thread each, `pipeline.parallel`)."""
    return _blas_pools().limit(limits=1, user_api="blas")


def patch_proposals(feats: np.ndarray, cfg: ProposalsConfig) -> list[Proposal]:
    """Patch features (h, w, D) -> up to cfg.max_per_image proposals, best score first.

    A candidate whose contrast score is not above cfg.min_score is dropped, so an image with no salient
    object (near-uniform features, where the cut is arbitrary) gets no proposal and stays background.
    """
    h, w = feats.shape[:2]
    with one_blas_thread():
        sim = affinity(feats)
        vecs = ncut_vectors(sim, cfg.tau, cfg.eps, cfg.num_eigs)
    cands = []
    for e in range(vecs.shape[1]):
        vec = vecs[:, e]
        fg = foreground_side(vec, (h, w)) if cfg.fg_rule == "border" else seed_side(vec, (h, w))
        comps = components(fg, cfg.min_patches) if cfg.components == "all" else seed_component(fg, vec, cfg.min_patches)
        for comp in comps:
            score = contrast_score(sim, comp) if comp.sum() < h * w else 0.0
            if score > cfg.min_score:
                cands.append(Proposal(comp, score, e + 1))
    cands.sort(key=lambda p: -p.score)
    kept: list[Proposal] = []
    for c in cands:
        if all(iou(c.patches, k.patches) <= cfg.nms_iou for k in kept):
            kept.append(c)
        if len(kept) == cfg.max_per_image:
            break
    return kept


def upsample(patches: np.ndarray, shape: tuple[int, int] | int) -> np.ndarray:
    """(h, w) bool patch mask -> (H, W) bool pixel mask (shape (H, W), or an int for a square) by bilinear
    upsampling at 0.5."""
    height, width = (shape, shape) if isinstance(shape, int) else shape
    return cv2.resize(patches.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) > 0.5


def grabcut_refine(image: np.ndarray, mask: np.ndarray, band: int, iters: int, max_side: int = 0,
                   eps: float = 1e-3, shrunk: Shrunk | None = None) -> np.ndarray:
    """Refine a pixel mask on its image: pixels deeper than `band` inside stay foreground, farther than
    `band` outside stay background, GrabCut decides the band between. (H, W, 3) uint8, (H, W) bool -> bool.

    `max_side` > 0 and the image's longer side above it: GrabCut runs on the image and the mask shrunk by s =
    max_side / longer side (area averaging, the mask at 0.5, the band times s, at least 1 pixel), and its mask comes
    back to (H, W) by joint upsampling: bilinear, then the fast guided filter on the full-resolution image (boxes of
    radius two shrunk pixels at about the shrunk size, subsample round(1 / s); `eps` on colours in 0..1), at 0.5, so
    its border follows the image's edges again (a disc refined at a quarter of its size: IoU 0.944 with the truth
    upsampled bilinearly, 1.000 guided). GrabCut's cost grows with the pixels, so this is about 1 / s^2 cheaper; an
    image whose longer side is at most `max_side` is refined exactly as with 0 (full resolution).
    shrunk: `shrunk_for(image, max_side, eps)` built once for the image and shared by its masks (the same result;
    built here when None).
    """
    height, width = mask.shape
    if shrunk is None:
        shrunk = shrunk_for(image, max_side, eps)
    if shrunk is None:
        return _grabcut(image, mask, band, iters)
    small_mask = cv2.resize(mask.astype(np.float32), shrunk.size, interpolation=cv2.INTER_AREA) > 0.5
    out = _grabcut(shrunk.image, small_mask, max(1, round(band * shrunk.scale)), iters)
    soft = cv2.resize(out.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return shrunk.guide.filter(soft) > 0.5


class Shrunk:
    """The image-only half of `grabcut_refine` at a bounded size, computed once per image: the scale s = max_side /
    longer side, the shrunk (h, w, 3) uint8 image GrabCut sees (area averaging) and the fast guided filter on the
    full (H, W, 3) image that brings masks back (radius 2 round(1 / s), subsample round(1 / s), `eps`)."""

    def __init__(self, image: np.ndarray, max_side: int, eps: float) -> None:
        height, width = image.shape[:2]
        self.scale = max_side / max(height, width)
        self.size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))  # cv2 (width, height)
        self.image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        sub = max(1, round(1 / self.scale))  # the fast guided filter's boxes at about GrabCut's resolution
        self.guide = GuidedFilter(image, 2 * sub, eps, subsample=sub)


def shrunk_for(image: np.ndarray, max_side: int, eps: float) -> Shrunk | None:
    """`Shrunk(image, max_side, eps)` when `max_side` > 0 and the (H, W, 3) image's longer side is above it; None
    when GrabCut runs at full resolution (the one place that decides it)."""
    return Shrunk(image, max_side, eps) if 0 < max_side < max(image.shape[:2]) else None


def _grabcut(image: np.ndarray, mask: np.ndarray, band: int, iters: int) -> np.ndarray:
    """`grabcut_refine` at the image's own resolution.

    GrabCut starts its colour models with k-means drawing from OpenCV's per-thread RNG, whose state every earlier
    call moves on: the RNG is reset (to its start state, seed 0) before each call, so the result depends on the
    arguments alone, not on the masks refined before it in the process (image order, the split of images between
    worker processes)."""
    if mask.sum() < 4 or mask.all():
        return mask
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, kernel).astype(bool)
    outer = cv2.dilate(m8, kernel).astype(bool)
    gc = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    gc[outer] = cv2.GC_PR_BGD
    gc[mask] = cv2.GC_PR_FGD
    gc[inner] = cv2.GC_FGD
    if not inner.any():
        return mask
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mask
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


class GuidedFilter:
    """He, Sun & Tang's guided filter with a colour guide, its image-only half computed once per image and applied to
    any number of sources (an image's proposals): (H, W, 3) uint8 guide; `filter` maps an (H, W) float source to the
    (H, W) float32 source smoothed inside regions of the image and kept sharp across its edges. Per pixel a local
    linear model q = a . I + b over (2 radius + 1)^2 windows (box means by cv2.boxFilter), eps regularising a on
    colours scaled to 0..1 (the paper's Eq. 19-21 for colour guides, the 3x3 covariance + eps I inverted per pixel by
    cofactors: np.linalg.solve per pixel is ~10x slower).

    subsample s > 1 is He & Sun's fast guided filter (arXiv 1505.00996): guide and source shrunk by s (area
    averaging), radius / s there, and only the box means of a and b brought back up (bilinear) to be applied to the
    full-resolution guide, so edges stay at full resolution while the boxes cost s^2 less. s = 1 is the exact filter."""

    def __init__(self, guide: np.ndarray, radius: int, eps: float, subsample: int = 1):
        self.full = np.divide(guide, np.float32(255), dtype=np.float32)  # one pass (astype, then / 255: ~15x slower)
        self.planes = [np.ascontiguousarray(self.full[..., c]) for c in range(3)]  # for the full-resolution apply
        self.shape = guide.shape[:2]
        self.subsample = subsample
        height, width = self.shape
        self.low = (max(1, -(-width // subsample)), max(1, -(-height // subsample)))  # cv2 (width, height)
        img = self.full if subsample == 1 else cv2.resize(self.full, self.low, interpolation=cv2.INTER_AREA)
        r = max(1, round(radius / subsample))
        self.k = (2 * r + 1, 2 * r + 1)
        self.img = img
        self.mean_i = self.box(img)
        v = {(i, j): self.box(img[..., i] * img[..., j]) - self.mean_i[..., i] * self.mean_i[..., j]
             + (eps if i == j else 0.0) for i in range(3) for j in range(i, 3)}
        c00 = v[1, 1] * v[2, 2] - v[1, 2] ** 2
        c01 = v[0, 2] * v[1, 2] - v[0, 1] * v[2, 2]
        c02 = v[0, 1] * v[1, 2] - v[0, 2] * v[1, 1]
        c11 = v[0, 0] * v[2, 2] - v[0, 2] ** 2
        c12 = v[0, 1] * v[0, 2] - v[0, 0] * v[1, 2]
        c22 = v[0, 0] * v[1, 1] - v[0, 1] ** 2
        det = v[0, 0] * c00 + v[0, 1] * c01 + v[0, 2] * c02
        self.inv = [[c / det for c in row] for row in ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))]

    def box(self, x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, self.k, borderType=cv2.BORDER_REFLECT)

    def filter(self, src: np.ndarray) -> np.ndarray:
        p = src.astype(np.float32)
        if self.subsample > 1:
            p = cv2.resize(p, self.low, interpolation=cv2.INTER_AREA)
        mean_p = self.box(p)
        cov = self.box(self.img * p[..., None]) - self.mean_i * mean_p[..., None]  # (h, w, 3): cov(I_c, p)
        a = np.stack([sum(row[c] * cov[..., c] for c in range(3)) for row in self.inv], -1)
        b = mean_p - (a * self.mean_i).sum(-1)
        mean_a, mean_b = cv2.split(self.box(a)), self.box(b)
        if self.subsample > 1:
            size = self.shape[::-1]
            mean_a = [cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) for m in mean_a]
            mean_b = cv2.resize(mean_b, size, interpolation=cv2.INTER_LINEAR)
        # mean_a . I + mean_b, channel by channel on contiguous planes: the same float32 sums in the same order as
        # (mean_a * I).sum(-1) + mean_b, ~20x faster than numpy's reduction over a length-3 axis
        return mean_a[0] * self.planes[0] + mean_a[1] * self.planes[1] + mean_a[2] * self.planes[2] + mean_b


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """One source through `GuidedFilter`: (H, W, 3) uint8 guide, (H, W) float source -> (H, W) float32."""
    return GuidedFilter(guide, radius, eps, subsample).filter(src)


def guided_refine(guide: GuidedFilter, patches: np.ndarray) -> np.ndarray:
    """A patch mask (h, w) bool on the image `guide` was built from (H, W) -> (H, W) bool: the bilinearly upsampled
    mask (0..1) guided-filtered on the image, thresholded at 0.5. A cheap edge-aware alternative to GrabCut (a few
    ms against ~100+ per image), in the spirit of TokenCut's bilateral solver."""
    height, width = guide.shape
    soft = cv2.resize(patches.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return guide.filter(soft) > 0.5


def pixel_masks(image: np.ndarray, props: list[Proposal], patch: int, cfg: ProposalsConfig) -> tuple[np.ndarray, list[Proposal]]:
    """Image (H, W, 3) uint8 and patch proposals on its (H/patch, W/patch) grid -> (H, W) uint8 map (0 none,
    i = i-th kept proposal) and the kept proposals. Overlaps go to the better-scored proposal; one left with
    fewer pixels than half of cfg.min_patches patches is dropped."""
    out = np.zeros(image.shape[:2], np.uint8)
    kept: list[Proposal] = []
    min_pixels = cfg.min_patches * patch * patch // 2
    guide = GuidedFilter(image, cfg.refine_radius, cfg.refine_eps, cfg.refine_subsample) \
        if cfg.refine == "guided" and props else None  # the image's half, shared by its proposals
    shrunk = shrunk_for(image, cfg.refine_max_side, cfg.refine_eps) \
        if cfg.refine == "grabcut" and props else None  # likewise
    for prop in props:
        if guide is not None:
            m = guided_refine(guide, prop.patches)
        else:
            m = upsample(prop.patches, image.shape[:2])
        if cfg.refine == "grabcut":
            m = grabcut_refine(image, m, band=patch // 2, iters=cfg.refine_iters, max_side=cfg.refine_max_side,
                               eps=cfg.refine_eps, shrunk=shrunk)
        m &= out == 0
        if m.sum() < min_pixels:
            continue
        kept.append(prop)
        out[m] = len(kept)
    return out, kept


def patch_fractions(mask_map: np.ndarray, n_masks: int, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) map with values 0..n_masks -> (n_masks, h, w) float32: share of each (H/h, W/w) patch each mask covers."""
    h, w = grid
    out = np.zeros((n_masks, h, w), np.float32)
    for i in range(n_masks):
        out[i] = cv2.resize((mask_map == i + 1).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out
