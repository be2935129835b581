"""Stage report: one static page to look at every stage (data/12_report/report.html, images embedded), the
journey picture of the images in report.journey_images, cluster / community / filter galleries, and the tables
that dvc plots draws (mIoU per label map, confusion)."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import load_params
from pipeline.report import inspect
from pipeline.report import page as report


def main() -> None:
    p = load_params()
    out = Path(p.paths.report)
    data = inspect.StageOutputs(p.paths)
    names = p.report.journey_images or data.manifest["names"][:p.report.journey_count]
    data.check_names(names)
    sections = []
    ev = Path(p.paths.evaluate)
    metrics = io.read_json(ev / "metrics.json") if (ev / "metrics.json").is_file() else {}
    rows = report.split_rows(metrics)
    if rows:
        sections.append(("Metrics across stages", "Hungarian-matched to the ground truth at its original size; "
                         "(eval): the held-out evaluation split, (train): the training split "
                         "(data/11_evaluate/metrics.json)",
                         report.table_html(rows, "label map", "metrics")))
        io.write_json(out / "plots" / "miou.json", report.miou_rows(metrics))
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
        io.write_json(out / "plots" / "confusion.json",
                      report.confusion_rows(np.asarray(net["confusion"]), pred_names, cls, p.report.confusion_rows))
    if (ev / "confusion.png").is_file():
        sections.append(("Confusion matrix", "rows: predicted class (matched name), columns: ground truth; row-normalised",
                         report.img_tag((ev / "confusion.png").read_bytes(), "confusion matrix")))
    curves = inspect.read_curves(Path(p.paths.train) / "live" / "plots" / "metrics")
    curves_png = report.png_bytes(report.curves_figure(curves))
    io.write_bytes(out / "curves.png", curves_png)
    sections.append(("Training curves", "dvclive, data/10_train/live", report.img_tag(curves_png, "training curves")))
    body = []
    for name in names:
        png = report.png_bytes(inspect.journey(data, name))
        io.write_bytes(out / "journey" / f"{name}.png", png)
        body.append(f"<h3>{name}</h3>" + report.img_tag(png, f"journey of {name}"))
    sections.append(("An image's journey", "proposal (-> distilled, with distill.method maskrcnn) -> cluster -> "
                     "pseudo-label -> filter -> merge -> network; "
                     "`python -m pipeline.report.inspect NAME` draws any other image", "".join(body)))
    for key, pic in inspect.galleries(data, p.report.gallery_size, p.report.tile_size).items():
        png = report.png_bytes(pic)
        io.write_bytes(out / "galleries" / f"{key}.png", png)
        sections.append((f"Gallery: {key}", "", report.img_tag(png, f"{key} gallery")))
    io.write_bytes(out / "report.html", report.render_html("unseg report", sections).encode())
    print(f"report: {len(sections)} sections, {len(names)} journeys -> {out / 'report.html'}")


if __name__ == "__main__":
    main()
