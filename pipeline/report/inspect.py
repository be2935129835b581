"""An image's journey through the stages, as one picture: `python -m pipeline.report.inspect IMAGE_NAME [-o out.png]`.

Reads what the stages wrote under data/ (run `dvc repro` first) and draws the image, its proposals with their
scores (and, with distill.method maskrcnn, the detector's masks that replaced them), the cluster of each mask,
the pseudo-label, what the filter kept, what merging relabelled, the network's prediction and, where the dataset
has it, the ground truth, with a legend of class colours. The report stage uses the same readers; the drawing is
pipeline.report.page's.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline import io
from pipeline.config import ConfigError, Paths, load_params
from pipeline.report import page as report


def final_row(details: dict) -> tuple[str, str] | None:
    """evaluate's details.json ({split: {label map: {mapping, ...}}}, the evaluation split first) -> (split, name)
    of the headline split's `network` row (the last round's predictions, which the journey draws; not
    `network + CRF`), else its last label map that is not a baseline, or None."""
    for split, rows in details.items():
        names = [k for k, v in rows.items() if isinstance(v, dict) and "mapping" in v and not k.startswith("baseline")]
        if names:
            return split, "network" if "network" in names else names[-1]
    return None


class StageOutputs:
    """The stages' tables, read once: the manifest, the scores of the masks the cluster stage took (the distill
    stage's; `proposals`) and, when the distill stage replaced them by a detector's, of the proposals themselves
    (`raw_proposals`), per-mask records of the latest stage that wrote them (merge > filter > cluster), evaluate's
    matching, and the classes' names (`names_file`, the project's names.yaml: io.class_names). Images and label maps
    are read per image."""

    def __init__(self, paths: Paths, names_file: str | Path) -> None:
        self.paths = paths
        self.manifest = io.read_manifest(paths.prepare)
        self.proposals: dict[str, list[dict]] = io.read_json(Path(paths.distill) / "proposals.json")
        summary = Path(paths.distill) / "summary.json"
        distilled = summary.is_file() and io.read_json(summary).get("method", "none") != "none"
        self.raw_proposals: dict[str, list[dict]] | None = (
            io.read_json(Path(paths.proposals) / "proposals.json") if distilled else None)
        self.merge: dict = {}
        for f in (Path(paths.merge) / "merge.json", Path(paths.filter) / "filter.json", Path(paths.cluster) / "clusters.json"):
            if f.is_file():
                table = io.read_json(f)
                self.records: list[dict] = table["masks"]
                if f.name == "merge.json":
                    self.merge = table
                break
        else:
            raise io.InputError(f"{paths.cluster}/clusters.json: file not found (run `dvc repro` up to the cluster stage)")
        self.by_image: dict[str, list[dict]] = {}
        for r in self.records:
            self.by_image.setdefault(r["image"], []).append(r)
        details_file = Path(paths.evaluate) / "details.json"
        self.details: dict = io.read_json(details_file) if details_file.is_file() else {}
        self.final = final_row(self.details)
        self.mapping: list[int] | None = self.details[self.final[0]][self.final[1]]["mapping"] if self.final else None
        clusters = io.read_json(Path(paths.cluster) / "clusters.json")
        self.dense = clusters.get("mode") == "dense"  # cluster.mode dense: no masks; classes 1..k on every patch
        self.n_pred = len(self.mapping) if self.mapping else 1 + max(
            (r["cluster"] + 1 for r in self.records), default=clusters["k"] if self.dense else 0)
        self.names = io.class_names(names_file, self.n_pred)

    def check_names(self, names: list[str]) -> None:
        """Raise InputError naming the images that are not in the prepared dataset."""
        known = set(self.manifest["names"])
        missing = [n for n in names if n not in known]
        if missing:
            raise io.InputError(f"images not in the prepared dataset: {', '.join(missing)} "
                                f"(names are those of data/01_prepare/images without .png, e.g. "
                                f"{', '.join(self.manifest['names'][:3])})")

    def saliency_heat(self, name: str) -> np.ndarray | None:
        """The saliency stage's map over the image (H, W, 3) uint8, or None where the stage made none."""
        f = Path(self.paths.saliency) / "heat" / f"{name}.jpg"
        return io.read_image(f) if f.is_file() else None

    def image(self, name: str) -> np.ndarray:
        return io.read_image(Path(self.paths.prepare) / "images" / f"{name}.png")

    def proposal_map(self, name: str) -> np.ndarray:
        """The masks the cluster stage took (the distill stage's), (H, W) 0 none, i = mask i."""
        return io.read_label(Path(self.paths.distill) / "masks" / f"{name}.png")

    def raw_proposals_of(self, name: str) -> tuple[np.ndarray, dict[int, float]] | None:
        """When the distill stage replaced the proposals: their own map (H, W) and {id: score}; else None."""
        if self.raw_proposals is None:
            return None
        return (io.read_label(Path(self.paths.proposals) / "masks" / f"{name}.png"),
                {m["id"]: m["score"] for m in self.raw_proposals.get(name, [])})

    def masks(self, name: str) -> list[dict]:
        """Per proposal of `name`: its id and score merged with its latest per-mask record."""
        recs = {r["mask"]: r for r in self.by_image.get(name, [])}
        return [{**recs.get(m["id"], {}), "mask": m["id"], "score": m["score"]} for m in self.proposals.get(name, [])]

    def label_map(self, folder: str | Path, name: str) -> np.ndarray | None:
        f = Path(folder) / f"{name}.png"
        return io.read_label(f) if f.is_file() else None


def at_size(label: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A label map resized to (H, W) by nearest neighbour (unchanged when it has that size; None stays None)."""
    if label is None or label.shape == tuple(shape):
        return label
    return cv2.resize(label, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def journey(data: StageOutputs, name: str) -> np.ndarray:
    """One image's journey picture (H, W, 3) uint8 from the stages' outputs."""
    data.check_names([name])
    p = data.paths
    image = data.image(name)
    # The ground truth and the network's prediction are at the image's original size: drawn at the prepared size.
    gt = at_size(data.label_map(Path(p.prepare) / "gt", name), image.shape[:2])
    if gt is not None and data.mapping is not None:
        gt = report.gt_in_prediction_colours(gt, data.mapping, data.n_pred)
    else:
        gt = None
    maps = {}
    for key, folder in (("pseudo", Path(p.pseudolabels) / "labels"), ("filtered", Path(p.filter) / "labels"),
                        ("merged", Path(p.merge) / "labels")):
        maps[key] = data.label_map(folder, name)
        if maps[key] is None:
            raise io.InputError(f"{folder}/{name}.png: not found (run `dvc repro` up to the merge stage)")
    panels = report.journey_panels(image, data.proposal_map(name), data.masks(name), maps["pseudo"],
                                   maps["filtered"], maps["merged"],
                                   at_size(data.label_map(Path(p.train) / "predictions" / "labels", name),
                                           image.shape[:2]), gt, data.raw_proposals_of(name),
                                   data.saliency_heat(name))
    legend = report.class_legend(data.names, data.mapping, data.manifest.get("class_names"))
    if gt is not None and data.mapping is not None:  # ground-truth classes no prediction was matched to
        pal = io.palette()
        for g, gname in enumerate(data.manifest["class_names"]):
            if g not in data.mapping:
                legend.insert(-1, (f"gt {gname} (unmatched)", pal[min(data.n_pred + g, 254)]))
    return report.journey_figure(panels, legend, f"{name}: from proposals to prediction"
                                 + (f" (colours matched to ground truth via '{data.final[1]}' on the {data.final[0]} split)"
                                    if data.final else ""))


def dense_maps(data: StageOutputs, names: list[str]) -> np.ndarray:
    """cluster.mode dense: each named training image, its cluster map (the cluster stage's most probable class of
    every patch, nearest-upsampled to the image) and its pseudo-label (the probabilities upsampled and refined by
    the CRF), both drawn over the image, and the class colours (matched to ground truth where evaluate ran)
    -> (H, W, 3) uint8."""
    data.check_names(names)
    probs, rows = io.dense_probs(data.paths.cluster, names), []
    for name in names:
        image = data.image(name)
        patches = at_size((probs.get(name).argmax(0) + 1).astype(np.uint8), image.shape[:2])
        pseudo = data.label_map(Path(data.paths.pseudolabels) / "labels", name)
        if pseudo is None:
            raise io.InputError(f"{data.paths.pseudolabels}/labels/{name}.png: not found (run `dvc repro` up to the "
                                "pseudolabels stage)")
        rows.append((name, image, patches, pseudo))
    legend = report.class_legend(data.names, data.mapping, data.manifest.get("class_names"))[1:-1]
    return report.dense_maps_figure(rows, legend, "dense mode: every patch clustered, no background class")


def _tile(data: StageOutputs, rec: dict, colour: np.ndarray, size: int, cache: dict) -> np.ndarray:
    name = rec["image"]
    if name not in cache:
        cache.clear()  # records are grouped by image often enough; keep memory flat
        cache[name] = (data.image(name), data.proposal_map(name))
    image, masks = cache[name]
    return report.mask_crop_tile(image, masks == rec["mask"], colour, size)


GALLERY_CAPTIONS = {"dense classes": "cluster.mode dense, one row per class (class 1 at the top): the training "
                                     "images with the largest share of its patches, its patches outlined in its "
                                     "colour and the rest dimmed (data/06_cluster/gallery.png)"}


def galleries(data: StageOutputs, n: int, size: int) -> dict[str, np.ndarray]:
    """Pictures of the masks per group -> {"clusters": ..., "communities": ..., "filter": ...} (H, W, 3) uint8:
    for each cluster its masks closest to and farthest from the centre; for each merge community the masks most
    and least in it (share of the mask's patches); for each class the filter's most reliable kept and least
    reliable dropped masks; with cluster.mode dense, the cluster stage's gallery of each class. A picture is left out
    when its stage's fields are absent."""
    recs, pal, cache, out = data.records, io.palette(), {}, {}

    pixels = np.array([next((m.get("pixels", 0) for m in data.proposals.get(r["image"], []) if m["id"] == r["mask"]), 0)
                       for r in recs])

    def rows(groups, values, smaller, label, colour, caption, keep_left=None, keep_right=None):
        result = []
        tie = -pixels if smaller else pixels  # equal values: larger masks first
        for g in sorted(set(int(x) for x in groups if x >= 0)):
            if keep_left is None:
                left, right = report.typical_members(values, groups, g, n, smaller, tie)
            else:
                left, _ = report.typical_members(values, np.where(keep_left, groups, -1), g, n, smaller, tie)
                right, _ = report.typical_members(values, np.where(keep_right, groups, -1), g, n, not smaller, -tie)
            c = colour(g)
            result.append(report.GalleryRow(
                label(g), [_tile(data, recs[i], c, size, cache) for i in left],
                [_tile(data, recs[i], c, size, cache) for i in right],
                [f"{caption(i)}\n{recs[i]['image'][-12:]}" for i in left],
                [f"{caption(i)}\n{recs[i]['image'][-12:]}" for i in right], tuple(int(v) for v in c)))
        return result

    if data.dense:  # the cluster stage's gallery: each class's images with most of it, its patches outlined
        out["dense classes"] = io.read_image(Path(data.paths.cluster) / "gallery.png")
    if not recs:
        return out
    cluster = np.array([r["cluster"] for r in recs])
    dist = np.array([r["distance"] for r in recs])
    sizes = np.bincount(cluster)
    out["clusters"] = report.gallery_figure(
        rows(cluster, dist, True, lambda g: f"class {g + 1}\n({sizes[g]} masks)", lambda g: pal[g + 1],
             lambda i: f"d {dist[i]:.2f}"),
        n, "clusters: masks by distance to their centre", "most typical (closest)", "least typical (farthest)")
    if "kept" in recs[0]:
        kept = np.array([r["kept"] for r in recs])
        rel = np.array([r["reliability"] for r in recs])
        out["filter"] = report.gallery_figure(
            rows(cluster, -rel, True, lambda g: f"class {g + 1}\nkept {int(kept[cluster == g].sum())}"
                 f"/{int((cluster == g).sum())}", lambda g: pal[g + 1], lambda i: f"r {rel[i]:.2f}",
                 keep_left=kept, keep_right=~kept),
            n, "filter: reliability r (centre distance + classifier confidence ranks)",
            "kept, most reliable", "dropped, least reliable")
    if "community" in recs[0] and data.merge:
        comm = np.array([-1 if r["community"] is None else r["community"] for r in recs])
        share = np.array([0.0 if r["community_share"] is None else r["community_share"] for r in recs])
        ccls = data.merge["community_class"]
        csize = np.bincount(comm[comm >= 0], minlength=len(ccls))
        out["communities"] = report.gallery_figure(
            rows(comm, share, False, lambda g: f"community {g}\n-> class {ccls[g]} ({csize[g]})",
                 lambda g: pal[ccls[g]], lambda i: f"{share[i]:.0%} in"),
            n, "merge communities: kept masks by their share of patches in the community",
            "most in it", "least in it")
    return out


Section = tuple[str, str, str]  # (title, caption, html body) of one report section


def evaluation_sections(data: StageOutputs, confusion_total: int) -> tuple[list[Section], dict[str, list[dict]]]:
    """The evaluate stage's tables as report sections (metrics across stages, per-class IoU, confusion matrix) and
    the tables dvc plots draws ({"miou": rows, "confusion": rows}; a table is absent when its input is)."""
    ev = Path(data.paths.evaluate)
    metrics = io.read_json(ev / "metrics.json") if (ev / "metrics.json").is_file() else {}
    rows = report.split_rows(metrics)
    sections: list[Section] = []
    plots: dict[str, list[dict]] = {}
    if rows:
        sections.append(("Metrics across stages", "Hungarian-matched to the ground truth at its original size; "
                         "(eval): the held-out evaluation split, (train): the training split "
                         "(data/11_evaluate/metrics.json)",
                         report.table_html(rows, "label map", "metrics")))
        plots["miou"] = report.miou_rows(metrics)
    else:
        sections.append(("Metrics", "", f"<p>{metrics.get('note', 'no metrics: the evaluate stage did not run')}</p>"))
    if (ev / "per_class.json").is_file():
        sections.append(("Per-class IoU", "IoU of each ground-truth class with the label map's matched class",
                         report.table_html(report.split_rows(io.read_json(ev / "per_class.json")), "label map",
                                           "per-class")))
    if data.final:
        net = data.details[data.final[0]][data.final[1]]
        cls = data.manifest["class_names"]
        pred_names = [f"{cls[m]} (class {i})" if m >= 0 else f"class {i} (unmatched)" for i, m in enumerate(net["mapping"])]
        plots["confusion"] = report.confusion_rows(np.asarray(net["confusion"]), pred_names, cls, confusion_total)
    if (ev / "confusion.png").is_file():
        sections.append(("Confusion matrix", "rows: predicted class (matched name), columns: ground truth; row-normalised",
                         report.img_tag((ev / "confusion.png").read_bytes(), "confusion matrix")))
    return sections, plots


def classes_section(data: StageOutputs) -> Section:
    """The Classes section: each class id with its name, the ground-truth class evaluate matched it to, and the
    bundle stage's gallery of it (data/11_bundle/classes/<id>.png), and how to name it."""
    folder = Path(data.paths.bundle) / "classes"
    galleries = {c: (folder / f"{c}.png").read_bytes() for c in data.names if (folder / f"{c}.png").is_file()}
    gt = data.manifest.get("class_names")
    matched = {c: gt[g] for c, g in enumerate(data.mapping or []) if gt and g >= 0}
    return ("Classes", f"each class the network predicts, with the training images holding most of it in the merged "
            f"pseudo-labels; name a class by adding 'id: name' (e.g. '1: horse') to {io.NAMES} in the project root "
            "and running dvc repro: the bundle (data/11_bundle) and this page take the names",
            report.classes_html(data.names, galleries, matched))


def read_curves(live_plots: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """dvclive's plots/metrics folder (<name>.tsv with columns step and <name>, nested folders allowed)
    -> {relative name: (steps, values)}, sorted by name; {} when the folder does not exist."""
    folder = Path(live_plots)
    out = {}
    for f in sorted(folder.rglob("*.tsv")) if folder.is_dir() else []:
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows and "step" in rows[0] and f.stem in rows[0]:
            name = str(f.relative_to(folder).with_suffix(""))
            out[name] = (np.array([float(r["step"]) for r in rows]), np.array([float(r[f.stem]) for r in rows]))
    return out


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.report.inspect") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", metavar="IMAGE_NAME", help="image name(s) as in data/01_prepare/images, without .png")
    ap.add_argument("-o", "--out", default="", help="output PNG (one image) or folder (several); default journey_<name>.png here")
    ap.add_argument("--params", default="params.yaml", help="params file whose paths to read (default params.yaml)")
    ap.add_argument("--names", dest="names_file", default=io.NAMES,
                    help=f"class names, one 'id: name' a line (default {io.NAMES})")
    args = ap.parse_args(argv)
    try:
        paths = load_params(args.params).paths
        data = StageOutputs(paths, args.names_file)
        data.check_names(args.names)
        for name in args.names:
            if args.out and len(args.names) == 1 and args.out.endswith(".png"):
                dest = Path(args.out)
            else:
                dest = Path(args.out or ".") / f"journey_{name}.png"
            io.write_image(dest, journey(data, name))
            print(f"{name}: journey -> {dest}")
    except (io.InputError, ConfigError) as e:
        print(f"inspect: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
