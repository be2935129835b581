"""Classic saliency, with no weights and no backbone: two background-prior cues of different kinds, fused.

- **RBD** (Zhu, Liang, Wei, Sun, "Saliency Optimization from Robust Background Detection", CVPR 2014): SLIC
  superpixels (scikit-image) on the image; geodesic distances between superpixels on their adjacency graph, edge
  weight the Euclidean distance of their mean CIE-Lab colours, the superpixels on the image border linked to each
  other (scipy's shortest paths); boundary connectivity BndCon(p) = Len_bnd(p) / sqrt(Area(p)) with
  Area(p) = sum_q exp(-geo(p, q)^2 / (2 sigma_clr^2)) and Len_bnd the same sum over border superpixels; background
  probability w_bg = 1 - exp(-BndCon^2 / (2 sigma_bndcon^2)); background-weighted contrast
  wCtr(p) = sum_q d_app(p, q) exp(-d_spa(p, q)^2 / (2 sigma_spa^2)) w_bg(q); then the paper's least-squares step:
  minimise sum_i w_bg_i s_i^2 + sum_i w_fg_i (s_i - 1)^2 + sum_{i~j} w_ij (s_i - s_j)^2 with w_fg = wCtr scaled to
  [0, 1] and w_ij = exp(-d_app(i, j)^2 / (2 sigma_clr^2)) + mu on adjacent superpixels, i.e. the linear system
  (diag(w_bg) + diag(w_fg) + L_w) s = w_fg (L_w the graph Laplacian of w).
- **MBD+** (Zhang, Sclaroff, Lin, Shen, Price, Mech, "Minimum Barrier Salient Object Detection at 80 FPS", ICCV
  2015): the minimum barrier distance of every pixel to the image border on each Lab channel, summed, plus the
  paper's backgroundness cue (Mahalanobis colour distance to each of the four border strips, their sum minus their
  maximum), then the paper's morphological smoothing (opening then closing by reconstruction).

Read from the papers and from yhenon/pyimgsaliency (Python, RBD and MBD) and Zhu's MATLAB release. Where this
departs, and why:
- RBD: the paper's fixed parameters (sigma_clr 10, sigma_bndcon 1, sigma_spa 0.25, mu 0.1), not the MATLAB
  release's per-image "dynamic" ones (clipped edge weights, adapted sigmas): fewer knobs, and the fixed ones are
  what the paper reports. d_app in the contrast and the smoothness is the Lab distance of the mean colours, as in
  the paper (pyimgsaliency uses the geodesic one). Smoothness on adjacent superpixels only (the release also
  links neighbours' neighbours). Border superpixels: those touching the outermost pixel ring, linked to each other
  at their colour distance (`border_link: colour`, as the release, less its clip value, a per-image quantile of the
  edge weights left out with its other dynamic knobs) or at zero cost (`zero`), so that a superpixel's geodesic
  distance to every border superpixel is its distance to the border as a whole. On the 200 Weizmann horses
  (original size, Otsu threshold on RBD's map alone) zero gives a pooled foreground IoU of 0.56, colour 0.49.
- MBD: FastMBD's raster scans replaced by row and column sweeps (each sweep one numpy operation per row or
  column, all pixels of it at once), repeated `mbd_passes` times: the same relaxation of the barrier distance, in
  another visiting order, so fast in numpy. Left out of MB+: the centre bias (a photographer's prior that would
  favour object-centric sets) and the final sigmoid (monotone: it does not move a threshold on the fused map much).
- Fusion: the mean of the two maps, each scaled to [0, 1] (DeepUSPS refines each method's maps with a network of
  its own, then averages; here the maps are averaged first and refined once: pipeline/method/saliency_refine.py).

Everything is per image, at the prepared image's size: `saliency_maps` is the stage's work on one image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path
from skimage import color, filters, measure, morphology, segmentation

from pipeline import io
from pipeline.config import SaliencyConfig

FLAT = 1e-6  # a map whose range is below this carries no saliency (a flat image): it scales to zeros


@dataclass(frozen=True)
class Superpixels:
    """An image's superpixels. labels: (H, W) int64 in 0..n-1; lab: (n, 3) float64 mean CIE-Lab colour;
    centres: (n, 2) float64 mean (y / H, x / W); border: (n,) bool, touching the outermost pixel ring;
    edges: (E, 2) int64 adjacent pairs (i < j), each once."""
    labels: np.ndarray
    lab: np.ndarray
    centres: np.ndarray
    border: np.ndarray
    edges: np.ndarray

    @property
    def n(self) -> int:
        return len(self.lab)


def describe(labels: np.ndarray, lab_image: np.ndarray) -> Superpixels:
    """(H, W) int superpixel labels (any ids) and the (H, W, 3) Lab image -> Superpixels, ids made 0..n-1."""
    _, flat = np.unique(labels, return_inverse=True)
    lab_ids = flat.reshape(labels.shape).astype(np.int64)
    n = int(lab_ids.max()) + 1
    count = np.bincount(lab_ids.ravel(), minlength=n).astype(np.float64)
    mean_lab = np.stack([np.bincount(lab_ids.ravel(), lab_image[..., c].ravel(), n) for c in range(3)], 1) / count[:, None]
    h, w = labels.shape
    yy, xx = np.mgrid[:h, :w]
    centres = np.stack([np.bincount(lab_ids.ravel(), (yy / h).ravel(), n),
                        np.bincount(lab_ids.ravel(), (xx / w).ravel(), n)], 1) / count[:, None]
    border = np.zeros(n, bool)
    border[np.unique(np.concatenate([lab_ids[0], lab_ids[-1], lab_ids[:, 0], lab_ids[:, -1]]))] = True
    pairs = np.concatenate([np.stack([lab_ids[:, :-1].ravel(), lab_ids[:, 1:].ravel()], 1),
                            np.stack([lab_ids[:-1].ravel(), lab_ids[1:].ravel()], 1)])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1)
    edges = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    return Superpixels(lab_ids, mean_lab, centres, border, edges)


def superpixels(image: np.ndarray, cfg: SaliencyConfig) -> Superpixels:
    """(H, W, 3) uint8 RGB -> its SLIC superpixels (scikit-image, cfg.superpixels segments, cfg.compactness)."""
    labels = segmentation.slic(image, n_segments=cfg.superpixels, compactness=cfg.compactness, start_label=0,
                               channel_axis=-1)
    return describe(labels, color.rgb2lab(image))


def colour_distances(sp: Superpixels) -> np.ndarray:
    """(n, n) float64 Euclidean distances of the superpixels' mean Lab colours (d_app)."""
    return np.sqrt(((sp.lab[:, None] - sp.lab[None]) ** 2).sum(-1))


def geodesic(sp: Superpixels, d_app: np.ndarray, border_link: str) -> np.ndarray:
    """(n, n) float64 shortest-path lengths on the adjacency graph (edge weight d_app), the border superpixels
    linked pairwise (RBD: the border is one connected background) at their colour distance (border_link "colour")
    or at zero cost ("zero": a superpixel is then equally far from every border superpixel, whatever their
    colours)."""
    b = np.flatnonzero(sp.border)
    bi, bj = np.meshgrid(b, b, indexing="ij")
    keep = bi < bj
    i = np.concatenate([sp.edges[:, 0], bi[keep]])
    j = np.concatenate([sp.edges[:, 1], bj[keep]])
    w = d_app[i, j]
    if border_link == "zero":
        w[len(sp.edges):] = 0  # the border pairs, after the adjacent ones
    w += 1e-12  # a zero weight would read as no edge in a sparse matrix
    graph = coo_matrix((w, (i, j)), shape=(sp.n, sp.n)).tocsr()
    return shortest_path(graph, method="D", directed=False)


def boundary_connectivity(geo: np.ndarray, border: np.ndarray, sigma_clr: float) -> np.ndarray:
    """(n, n) geodesic distances and the (n,) border flags -> (n,) BndCon = Len_bnd / sqrt(Area)."""
    s = np.exp(-geo ** 2 / (2 * sigma_clr ** 2))
    return s[:, border].sum(1) / np.sqrt(s.sum(1))


def background_probability(bnd_con: np.ndarray, sigma_bndcon: float) -> np.ndarray:
    """(n,) BndCon -> (n,) w_bg = 1 - exp(-BndCon^2 / (2 sigma_bndcon^2)) in [0, 1)."""
    return 1 - np.exp(-bnd_con ** 2 / (2 * sigma_bndcon ** 2))


def weighted_contrast(d_app: np.ndarray, centres: np.ndarray, w_bg: np.ndarray, sigma_spa: float) -> np.ndarray:
    """(n, n) colour distances, (n, 2) normalised centres, (n,) w_bg -> (n,) wCtr, the contrast of each superpixel
    to the others, weighted by their nearness and their background probability."""
    d_spa2 = ((centres[:, None] - centres[None]) ** 2).sum(-1)
    return (d_app * np.exp(-d_spa2 / (2 * sigma_spa ** 2)) * w_bg[None]).sum(1)


def scaled(x: np.ndarray) -> np.ndarray:
    """Any float array -> the same scaled to [0, 1] by its min and max (zeros when its range is below FLAT)."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi - lo > FLAT else np.zeros_like(x, dtype=np.float64)


def optimise(w_bg: np.ndarray, w_fg: np.ndarray, edges: np.ndarray, d_app: np.ndarray, sigma_clr: float,
             mu: float) -> np.ndarray:
    """RBD's least-squares step: (n,) w_bg, (n,) w_fg, (E, 2) adjacent pairs and (n, n) colour distances -> (n,)
    s minimising sum w_bg s^2 + sum w_fg (s - 1)^2 + sum_edges w_ij (s_i - s_j)^2."""
    n = len(w_bg)
    w = np.exp(-d_app[edges[:, 0], edges[:, 1]] ** 2 / (2 * sigma_clr ** 2)) + mu
    lap = np.zeros((n, n))
    np.add.at(lap, (edges[:, 0], edges[:, 1]), -w)
    np.add.at(lap, (edges[:, 1], edges[:, 0]), -w)
    lap[np.diag_indices(n)] = -lap.sum(1)
    if not w_fg.any():  # no contrast anywhere: nothing is salient
        return np.zeros(n)
    return np.linalg.solve(lap + np.diag(w_bg + w_fg), w_fg)


def rbd(image: np.ndarray, cfg: SaliencyConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 RBD saliency in [0, 1] (optimised, per superpixel)."""
    sp = superpixels(image, cfg)
    if sp.n < 2:
        return np.zeros(image.shape[:2])
    d_app = colour_distances(sp)
    w_bg = background_probability(boundary_connectivity(geodesic(sp, d_app, cfg.border_link), sp.border,
                                                        cfg.sigma_clr),
                                  cfg.sigma_bndcon)
    w_fg = scaled(weighted_contrast(d_app, sp.centres, w_bg, cfg.sigma_spa))
    s = optimise(w_bg, w_fg, sp.edges, d_app, cfg.sigma_clr, cfg.mu)
    return scaled(s)[sp.labels]


def barrier_distance(channel: np.ndarray, passes: int) -> np.ndarray:
    """(H, W) float image -> (H, W) float64 approximate minimum barrier distance to the border (0 on the border):
    for a path, its barrier is max - min of the values on it; each sweep (down, up, right, left) relaxes every
    pixel through its neighbour on the side it comes from, keeping the path's running max and min."""
    x = channel.astype(np.float64)
    d = np.full(x.shape, np.inf)
    d[0], d[-1], d[:, 0], d[:, -1] = 0, 0, 0, 0
    hi, lo = x.copy(), x.copy()
    for _ in range(passes):
        for axis, order in ((0, 1), (0, -1), (1, 1), (1, -1)):
            dv, hv, lv, xv = (np.moveaxis(a, axis, 0) for a in (d, hi, lo, x))  # views: sweep along axis 0
            rows = range(1, len(xv)) if order == 1 else range(len(xv) - 2, -1, -1)
            for r in rows:
                q = r - order
                new_hi, new_lo = np.maximum(hv[q], xv[r]), np.minimum(lv[q], xv[r])
                better = new_hi - new_lo < dv[r]
                dv[r] = np.where(better, new_hi - new_lo, dv[r])
                hv[r] = np.where(better, new_hi, hv[r])
                lv[r] = np.where(better, new_lo, lv[r])
    return d


def backgroundness(lab: np.ndarray, strip: float) -> np.ndarray:
    """(H, W, 3) Lab -> (H, W) float64 MB+'s border-contrast cue: the Mahalanobis distance of each pixel's colour
    to each of the four border strips (`strip` of the side wide), each scaled by its maximum, summed, minus their
    maximum (so one strip that is foreground does not count)."""
    h, w = lab.shape[:2]
    r = max(1, int(round(strip * min(h, w))))
    maps = []
    for region in (lab[:r], lab[-r:], lab[:, :r], lab[:, -r:]):
        px = region.reshape(-1, 3)
        inv = np.linalg.inv(np.cov(px.T) + 1e-3 * np.eye(3))
        diff = lab.reshape(-1, 3) - px.mean(0)
        u = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, inv, diff), 0)).reshape(h, w)
        maps.append(u / u.max() if u.max() > FLAT else u)
    stack = np.stack(maps)
    return stack.sum(0) - stack.max(0)


def smooth(sal: np.ndarray, alpha: float) -> np.ndarray:
    """MB+'s smoothing of an (H, W) map in [0, 1]: opening by reconstruction, then closing by reconstruction,
    with a disc of radius alpha * sqrt(mean saliency) pixels at the paper's working size of 300 x 300, scaled to
    the image (times sqrt(H W) / 300)."""
    radius = int(round(alpha * np.sqrt(sal.mean()) * np.sqrt(sal.size) / 300))
    if radius < 1:
        return sal
    fp = morphology.disk(radius)
    opened = morphology.reconstruction(morphology.erosion(sal, fp), sal, method="dilation")
    return morphology.reconstruction(morphology.dilation(opened, fp), opened, method="erosion")


def mbd(image: np.ndarray, cfg: SaliencyConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float64 MBD+ saliency in [0, 1]."""
    lab = color.rgb2lab(image)
    barrier = sum(barrier_distance(lab[..., c], cfg.mbd_passes) for c in range(3))
    return scaled(smooth(scaled(scaled(barrier) + scaled(backgroundness(lab, cfg.border_strip))), cfg.smooth_alpha))


CUES = {"rbd": rbd, "mbd": mbd}


def saliency_maps(image: np.ndarray, cfg: SaliencyConfig) -> dict[str, np.ndarray]:
    """(H, W, 3) uint8 RGB -> {cue: (H, W) float64 map in [0, 1]} for every cue in cfg.cues, and "fused": their
    mean."""
    maps = {cue: CUES[cue](image, cfg) for cue in cfg.cues}
    maps["fused"] = np.mean([maps[c] for c in cfg.cues], 0)
    return maps


def threshold(sal: np.ndarray, rule: str) -> float:
    """The adaptive threshold of an (H, W) map in [0, 1]: otsu (Otsu's, scikit-image) or twice_mean (Achanta et
    al. 2009: twice the map's mean). A flat map gets 1.0 (nothing above it)."""
    if float(sal.max() - sal.min()) <= FLAT:
        return 1.0
    return float(filters.threshold_otsu(sal)) if rule == "otsu" else min(1.0, 2 * float(sal.mean()))


def salient_regions(sal: np.ndarray, rule: str, min_pixels: int) -> list[tuple[np.ndarray, float]]:
    """(H, W) map in [0, 1] -> its salient regions, best first: the 8-connected components of sal > threshold with
    at least min_pixels pixels, each with its score, mean saliency inside minus mean outside the region."""
    fg = sal > threshold(sal, rule)
    comps = measure.label(fg, connectivity=2)
    out = []
    for i in range(1, int(comps.max()) + 1):
        m = comps == i
        if m.sum() < min_pixels or m.all():
            continue
        out.append((m, float(sal[m].mean() - sal[~m].mean())))
    return sorted(out, key=lambda t: -t[1])


def to_png(sal: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W) uint8 (0..255), as the stage writes it."""
    return np.round(np.clip(sal, 0, 1) * 255).astype(np.uint8)


def from_png(png: np.ndarray) -> np.ndarray:
    """(H, W) uint8 map as written -> (H, W) float64 in [0, 1]."""
    return png.astype(np.float64) / 255


def heat(image: np.ndarray, sal: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image and its (H, W) map in [0, 1] -> (H, W, 3) uint8 picture: the map as a heat map
    (OpenCV's inferno) over the image, half and half."""
    hm = cv2.applyColorMap(to_png(sal), cv2.COLORMAP_INFERNO)[..., ::-1]
    return ((image.astype(np.float32) + hm) / 2).astype(np.uint8)


def write_classic(name: str, prepare: str, out: Path, cfg: SaliencyConfig, fused_to: str) -> str:
    """The saliency stage's classic work on one image: reads prepare/images/<name>.png, writes each cue's map to
    out/cues/<cue>/<name>.png and the fused map to out/<fused_to>/<name>.png (8-bit greyscale). Runs in a worker
    process (parallel.map_images)."""
    maps = saliency_maps(io.read_image(Path(prepare) / "images" / f"{name}.png"), cfg)
    for cue in cfg.cues:
        io.write_gray(out / "cues" / cue / f"{name}.png", to_png(maps[cue]))
    io.write_gray(out / fused_to / f"{name}.png", to_png(maps["fused"]))
    return name
