"""Looking at every stage: galleries of typical and atypical masks, an image's journey through the stages,
and a self-contained HTML report. Pure functions: arrays and records in, RGB arrays or HTML strings out."""
from __future__ import annotations

import base64
import html
import io as _bytes_io
from dataclasses import dataclass, field

import cv2
import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pipeline import io  # noqa: E402
from pipeline.report import viz  # noqa: E402

# ---------------------------------------------------------------- choosing members

def typical_members(values: np.ndarray, groups: np.ndarray, group: int, n: int, smaller_is_typical: bool = True,
                    tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `n` most and `n` least typical members of `group`.

    values: (M,) float typicality score (e.g. distance to the centre); groups: (M,) int group per item;
    tiebreak: (M,) orders members of equal value, in the same direction as values (e.g. mask size)
    -> (most (<= n,), least (<= n,)) int indices into M, most typical first in `most`, least typical first
    in `least`; a member is never in both (small groups are split between the two).
    """
    idx = np.flatnonzero(np.asarray(groups) == group)
    second = np.zeros(len(idx)) if tiebreak is None else np.asarray(tiebreak)[idx]
    order = idx[np.lexsort((second, np.asarray(values)[idx]))]
    if not smaller_is_typical:
        order = order[::-1]
    most = order[:n]
    least = order[len(most):][::-1][:n]
    return most, least


def class_legend(names: dict[int, str], mapping: list[int] | None,
                 gt_names: list[str] | None) -> list[tuple[str, np.ndarray]]:
    """Legend entries (label, (3,) uint8 colour) for classes 0..len(names)-1 ({id: name}, io.class_names) in the
    project palette, each with the ground-truth class it was matched to when `mapping` (pred -> gt index, -1
    unmatched) is given, ignore last."""
    pal = io.palette()
    out = []
    for c in range(len(names)):
        label = f"{c} {names[c]}"
        if mapping is not None and gt_names is not None and c < len(mapping):
            label += f" ~ {gt_names[mapping[c]]}" if mapping[c] >= 0 else " (unmatched)"
        out.append((label, pal[c]))
    out.append((f"{io.IGNORE} ignored", pal[io.IGNORE]))
    return out


def classes_html(names: dict[int, str], galleries: dict[int, bytes], matched: dict[int, str]) -> str:
    """The report's Classes section: a table row per class id ({id: name}) with its name, the ground-truth class
    it was matched to where `matched` has it, and its gallery (PNG bytes; "(no pixels)" without one)."""
    rows = "".join(f"<tr><th>{c}</th><td>{html.escape(n)}</td><td>{html.escape(matched.get(c, ''))}</td><td>"
                   + (img_tag(galleries[c], f"class {c}") if c in galleries else "(no pixels)") + "</td></tr>"
                   for c, n in sorted(names.items()))
    return ('<table id="classes"><thead><tr><th>id</th><th>name</th><th>matched ground truth</th><th>gallery</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def gt_in_prediction_colours(gt: np.ndarray, mapping: list[int], n_pred: int) -> np.ndarray:
    """Ground truth (H, W) uint8 with gt class indices -> (H, W) uint8 in prediction indices: gt class g becomes
    the predicted class matched to it (mapping: pred -> gt, -1 unmatched), an unmatched gt class g becomes
    n_pred + g, ignore stays ignore. So the same colour means the same class in every panel."""
    lut = np.arange(256, dtype=np.int64) + n_pred
    for p, g in enumerate(mapping):
        if g >= 0:
            lut[g] = p
    lut = np.clip(lut, 0, 254)
    lut[io.IGNORE] = io.IGNORE
    return lut[gt].astype(np.uint8)


def mask_crop_tile(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, size: int, margin: float = 0.3,
                   min_side: float = 0.25) -> np.ndarray:
    """Image (H, W, 3) uint8 and bool mask (H, W) -> (size, size, 3) uint8 tile: a square crop around the mask
    (its box grown by `margin` per side, at least `min_side` of the image), the mask in colour, the rest grey and
    dimmed, the mask outlined in `colour` at the tile's resolution."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs):
        side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * (1 + 2 * margin)
        side = int(min(max(side, min_side * min(h, w)), min(h, w)))
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        y0 = int(np.clip(round(cy - side / 2), 0, h - side))
        x0 = int(np.clip(round(cx - side / 2), 0, w - side))
        image, mask = image[y0:y0 + side, x0:x0 + side], mask[y0:y0 + side, x0:x0 + side]
    grey = image.astype(np.float32).mean(-1, keepdims=True) * 0.45
    tile = np.where(mask[..., None], image.astype(np.float32), grey).astype(np.uint8)
    tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    tile[cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0] = colour
    return tile


# ---------------------------------------------------------------- figures

def figure_to_rgb(fig) -> np.ndarray:
    """A matplotlib figure -> (H, W, 3) uint8, and the figure is closed."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


@dataclass
class GalleryRow:
    """One gallery row: a label, two groups of (size, size, 3) tiles with a caption each, the row's colour."""

    label: str
    left: list[np.ndarray]
    right: list[np.ndarray]
    left_captions: list[str] = field(default_factory=list)
    right_captions: list[str] = field(default_factory=list)
    colour: tuple[int, int, int] = (0, 0, 0)


def gallery_figure(rows: list[GalleryRow], n: int, title: str, left_title: str, right_title: str) -> np.ndarray:
    """Gallery rows (each up to `n` tiles left and right) -> (H, W, 3) uint8 picture: a row per group, left the
    `left_title` tiles, a gap, right the `right_title` tiles, a caption under every tile."""
    cols = 2 * n + 1
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(0.95 * cols + 1.6, 1.3 * max(len(rows), 1) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for side, tiles, caps, offset in (("left", row.left, row.left_captions, 0),
                                          ("right", row.right, row.right_captions, n + 1)):
            for i, tile in enumerate(tiles[:n]):
                ax = axes[r, offset + i]
                ax.imshow(tile)
                if i < len(caps):
                    ax.set_title(caps[i], fontsize=5.5, y=-0.36, linespacing=0.95)
        axes[r, 0].text(-0.08, 0.5, row.label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7,
                        color=np.asarray(row.colour) / 255.0 * 0.8, fontweight="bold")
    if rows:
        axes[0, 0].text(0, 1.12, left_title, transform=axes[0, 0].transAxes, fontsize=8, fontweight="bold")
        axes[0, n + 1].text(0, 1.12, right_title, transform=axes[0, n + 1].transAxes, fontsize=8, fontweight="bold")
    else:
        axes[0, 0].text(0, 0.5, "nothing to show", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=1.5 / (0.95 * cols + 1.6), right=0.99, top=1 - 0.45 / (1.3 * max(len(rows), 1) + 0.6),
                        bottom=0.06, wspace=0.08, hspace=0.5)
    return figure_to_rgb(fig)


@dataclass
class Panel:
    """One step of an image's journey: a title, an (H, W, 3) uint8 picture, notes (x, y, text) in its pixels."""

    title: str
    image: np.ndarray
    notes: list[tuple[float, float, str]] = field(default_factory=list)


def outline(image: np.ndarray, mask_map: np.ndarray, colours: dict[int, np.ndarray], fill: float = 0.35) -> np.ndarray:
    """Image (H, W, 3) uint8 and an index map (H, W) (0 = none) -> the image with each index tinted and outlined in
    colours[index] ((3,) uint8; indices without a colour are left as they are)."""
    out = image.astype(np.float32).copy()
    for idx, colour in colours.items():
        m = mask_map == idx
        if not m.any():
            continue
        out[m] = (1 - fill) * out[m] + fill * np.asarray(colour, np.float32)
        edge = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """Bool mask (H, W) -> (x, y) of a pixel inside it near its centre of mass (for a label on it)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0.0, 0.0
    cx, cy = xs.mean(), ys.mean()
    i = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return float(xs[i]), float(ys[i])


def journey_panels(image: np.ndarray, proposal_map: np.ndarray, masks: list[dict], pseudo: np.ndarray,
                   filtered: np.ndarray, merged: np.ndarray, prediction: np.ndarray | None,
                   gt: np.ndarray | None, proposals: tuple[np.ndarray, dict[int, float]] | None = None,
                   saliency: np.ndarray | None = None) -> list[Panel]:
    """One image through the stages -> panels, left to right.

    image (H, W, 3) uint8; proposal_map (H, W) uint8 (0 none, i = mask i): the masks the cluster stage took (the
    distill stage's); masks: one record per mask with keys mask, score and, where the stage ran on it, cluster
    (0-based), distance, kept, reliability, merged_class, community; pseudo / filtered / merged / prediction: (H, W)
    uint8 class maps; gt (H, W) uint8 already in prediction colours (see gt_in_prediction_colours) or None;
    proposals: when the distill stage replaced the proposals by a detector's masks, the proposals' own map (H, W)
    and {id: contrast score}, drawn before a "distilled" panel of proposal_map; saliency: the saliency stage's map
    over the image (H, W, 3) uint8 (its heat/ picture) when proposals.sources includes saliency, drawn first.
    """
    pal = io.palette()
    white = np.array([255, 255, 0], np.uint8)
    by_id = {m["mask"]: m for m in masks}
    notes = {i: centroid(proposal_map == i) for i in by_id}
    panels = [Panel("image", image)]
    if saliency is not None:
        panels.append(Panel("saliency map", saliency))
    if proposals is not None:
        raw, scores = proposals
        panels.append(Panel("proposals (contrast score)", outline(image, raw, {i: white for i in scores}, 0.15),
                            [(*centroid(raw == i), f"#{i} {s:.2f}") for i, s in scores.items()]))
    panels.append(Panel("distilled (detector score)" if proposals is not None else "proposals (contrast score)",
                        outline(image, proposal_map, {i: white for i in by_id}, 0.15),
                        [(*notes[i], f"#{i} {m.get('score', float('nan')):.2f}") for i, m in by_id.items()]))
    clustered = {i: pal[m["cluster"] + 1] for i, m in by_id.items() if m.get("cluster") is not None}
    panels.append(Panel("cluster (distance to centre)", outline(image, proposal_map, clustered, 0.45),
                        [(*notes[i], f"{m['cluster'] + 1}: d {m['distance']:.2f}") for i, m in by_id.items()
                         if m.get("cluster") is not None]))
    panels.append(Panel("pseudo-label", viz.colorize(pseudo)))
    panels.append(Panel("filtered (reliability)", viz.overlay(image, filtered, 0.6),
                        [(*notes[i], f"{'kept' if m['kept'] else 'dropped'} {m['reliability']:.2f}")
                         for i, m in by_id.items() if m.get("kept") is not None]))
    panels.append(Panel("merged (community)", viz.overlay(image, merged, 0.6),
                        [(*notes[i], (f"{m['cluster'] + 1}->{m['merged_class']}" if m["merged_class"] != m["cluster"] + 1
                                      else f"{m['merged_class']}") + (f" c{m['community']}" if m.get("community") is not None else ""))
                         for i, m in by_id.items() if m.get("merged_class") is not None and m.get("kept")]))
    if prediction is not None:
        panels.append(Panel("network prediction", viz.overlay(image, prediction, 0.6)))
    if gt is not None:
        panels.append(Panel("ground truth (matched colours)", viz.colorize(gt)))
    return panels


def journey_figure(panels: list[Panel], legend: list[tuple[str, np.ndarray]], title: str) -> np.ndarray:
    """Panels side by side with their notes, and a legend of class colours underneath -> (H, W, 3) uint8."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 3.1), squeeze=False)
    for ax, p in zip(axes[0], panels):
        ax.imshow(p.image, interpolation="nearest")
        ax.set_title(p.title, fontsize=7.5)
        ax.axis("off")
        for x, y, text in p.notes:
            ax.text(x, y, text, fontsize=6, ha="center", va="center", color="black",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="black", linewidth=0.5, label=l) for l, c in legend]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.2, wspace=0.05)
    return figure_to_rgb(fig)


def dense_maps_figure(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                      legend: list[tuple[str, np.ndarray]], title: str) -> np.ndarray:
    """cluster.mode dense: per image (name, image (H, W, 3) uint8, patch class map (H, W) uint8, pseudo-label
    (H, W) uint8), one row: the image, the patch classes over it, the pseudo-label over it; a legend of class
    colours underneath -> (H', W', 3) uint8."""
    n, legend_rows = max(len(rows), 1), (len(legend) + 3) // 4
    top, bottom = 0.45, 0.2 + 0.18 * legend_rows  # inches for the title, and for the legend
    height = 1.8 * n + top + bottom
    fig, axes = plt.subplots(n, 3, figsize=(6.6, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, image, patches, pseudo) in enumerate(rows):
        for ax, pic, head in zip(axes[r], (image, viz.overlay(image, patches, 0.6), viz.overlay(image, pseudo, 0.6)),
                                 (name, "cluster map (class of each patch)", "pseudo-label (upsampled, CRF)")):
            ax.imshow(pic, interpolation="nearest")
            ax.set_title(head, fontsize=7.5)
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="black", linewidth=0.5, label=l) for l, c in legend]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9, y=1 - 0.12 / height)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - top / height, bottom=bottom / height, wspace=0.04,
                        hspace=0.3)
    return figure_to_rgb(fig)


def curves_figure(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """{name: (steps (T,), values (T,))} -> (H, W, 3) uint8, one small line plot per series."""
    n = max(len(series), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.6), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], series.items()):
        ax.plot(x, y, marker=".")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    if not series:
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "no training curves", ha="center")
    fig.tight_layout()
    return figure_to_rgb(fig)


# ---------------------------------------------------------------- tables for dvc plots

def split_rows(table: dict) -> dict[str, dict]:
    """evaluate's per-split tables ({split: {label map: {...}}}, the evaluation split first, as metrics.json,
    per_class.json and details.json hold them) -> {"label map (split)": {...}} in that order; top-level entries
    that are not splits (e.g. COCO's proposals_mask_ap50 number) are left out."""
    return {f"{row} ({split})": v for split, rows in table.items() if isinstance(rows, dict)
            for row, v in rows.items() if isinstance(v, dict)}


def miou_rows(metrics: dict) -> list[dict]:
    """evaluate's metrics.json -> [{label_map: "row (split)", miou}] in its order, rows without miou left out."""
    return [{"label_map": k, "miou": v["miou"]} for k, v in split_rows(metrics).items() if "miou" in v]


def confusion_rows(conf: np.ndarray, pred_names: list[str], gt_names: list[str], total: int) -> list[dict]:
    """Confusion (n_pred, n_gt) pixel counts -> `total` rows {actual, predicted} whose counts are proportional to
    the pixel counts (largest remainder), for dvc's confusion template (one row per counted instance)."""
    conf = np.asarray(conf, np.float64)
    share = conf / max(conf.sum(), 1) * total
    counts = np.floor(share).astype(np.int64)
    rest = total - int(counts.sum()) if conf.sum() else 0
    if rest > 0:
        order = np.argsort(-(share - counts), axis=None, kind="stable")[:rest]
        np.add.at(counts.reshape(-1), order, 1)
    rows = []
    for p in range(conf.shape[0]):
        for g in range(conf.shape[1]):
            rows += [{"actual": gt_names[g], "predicted": pred_names[p]}] * int(counts[p, g])
    return rows


# ---------------------------------------------------------------- the HTML page

def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes."""
    buf = _bytes_io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """PNG bytes -> an <img> whose source is an embedded data URI (the page needs no other file)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else html.escape(str(v))


def table_html(rows: dict[str, dict], first_header: str, table_id: str) -> str:
    """{row name: {column: value}} -> an HTML table; columns are the union of the rows' keys in order of first
    appearance, so whatever rows and columns a stage wrote are shown. Floats to 3 decimals, missing cells empty."""
    cols: list[str] = []
    for v in rows.values():
        for k in v:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [first_header, *cols])
    body = "".join("<tr><th>" + html.escape(name) + "</th>" + "".join(f"<td>{_cell(v.get(c))}</td>" for c in cols)
                   + "</tr>" for name, v in rows.items())
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1500px;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
thead th{background:#eee}tbody th{text-align:left;font-weight:normal}img{max-width:100%;border:1px solid #ddd}
h2{border-bottom:1px solid #ccc;margin-top:1.6em}.note{color:#555;font-size:90%}"""

# Once every image has decoded, <body data-images-ok="N"> (N images) or "broken:K": a headless browser check reads it.
_CHECK = """<script>window.addEventListener('load',function(){var im=document.images,bad=0;
for(var i=0;i<im.length;i++){if(!(im[i].complete&&im[i].naturalWidth>0))bad++;}
document.body.setAttribute('data-images-ok',bad?'broken:'+bad:String(im.length));});</script>"""


def render_html(title: str, sections: list[tuple[str, str, str]]) -> str:
    """(heading, note, body HTML) sections -> one static HTML page (no scripts beyond an image check, no external
    files when bodies embed their images), with a table of contents."""
    toc = "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>' for i, (h, _, _) in enumerate(sections))
    parts = [f'<h2 id="s{i}">{html.escape(h)}</h2>' + (f'<p class="note">{html.escape(n)}</p>' if n else "") + body
             for i, (h, n, body) in enumerate(sections)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1><ul>{toc}</ul>\n"
            + "\n".join(parts) + f"\n{_CHECK}</body></html>\n")
