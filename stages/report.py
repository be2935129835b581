"""Stage report: one static page to look at every stage (data/12_report/report.html, images embedded): each class
with its gallery and name (names.yaml, which the page says how to edit), the journey picture of the images in
report.journey_images (with cluster.mode dense also their cluster maps), cluster / community / filter galleries
(dense: a gallery per class), and the tables that dvc plots draws (mIoU per label map, confusion)."""
from pathlib import Path

from pipeline import io
from pipeline.config import load_params
from pipeline.report import inspect
from pipeline.report import page as report


def main() -> None:
    p = load_params()
    out = Path(p.paths.report)
    data = inspect.StageOutputs(p.paths, io.NAMES)
    names = p.report.journey_images or data.manifest["names"][:p.report.journey_count]
    data.check_names(names)
    sections, plots = inspect.evaluation_sections(data, p.report.confusion_rows)
    sections.insert(0, inspect.classes_section(data))
    for key, rows in plots.items():
        io.write_json(out / "plots" / f"{key}.json", rows)
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
    if data.dense:
        png = report.png_bytes(inspect.dense_maps(data, names))
        io.write_bytes(out / "dense_maps.png", png)
        sections.append(("Dense cluster maps", "cluster.mode dense: the images of the journeys, each patch's class "
                         "and the pseudo-label", report.img_tag(png, "dense cluster maps")))
    for key, pic in inspect.galleries(data, p.report.gallery_size, p.report.tile_size).items():
        png = report.png_bytes(pic)
        io.write_bytes(out / "galleries" / f"{key}.png", png)
        caption = inspect.GALLERY_CAPTIONS.get(key, "")
        sections.append((f"Gallery: {key}", caption, report.img_tag(png, f"{key} gallery")))
    io.write_bytes(out / "report.html", report.render_html("unseg report", sections).encode())
    print(f"report: {len(sections)} sections, {len(names)} journeys -> {out / 'report.html'}")


if __name__ == "__main__":
    main()
