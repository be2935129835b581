"""Stage evaluate: the only stage that reads ground truth. Every label map of both splits, the label-free baselines
and the training split's masks are scored against it at its original size (pipeline/evaluate/scoring.py says
which rows and how) -> metrics.json, per_class.json, details.json, table.md and the headline confusion."""
from pathlib import Path

from pipeline import distributed, io
from pipeline.config import load_params
from pipeline.evaluate import metrics, scoring
from pipeline.report import viz


def main() -> None:
    p = load_params()
    distributed.launch("stages.evaluate", p.processes, "cpu")
    out = Path(p.paths.evaluate)
    manifest = io.read_manifest(p.paths.prepare)
    splits = scoring.labelled_splits(manifest)
    if not splits:
        if distributed.is_main():
            io.write_json(out / "metrics.json", {"note": "no ground truth in this dataset: nothing to evaluate"})
        print("evaluate: no image has ground truth (labels/); skipped")
        return
    n_pred, names = io.cluster_k(p.paths.cluster) + 1, manifest["class_names"]
    results, summary, extra = scoring.evaluate(p, manifest, splits, n_pred)  # every process: every image's scores
    if not distributed.is_main():
        return
    io.write_json(out / "metrics.json", {**summary, **extra, "cluster_k": n_pred - 1})  # the k used (cluster.k auto: chosen)
    io.write_json(out / "per_class.json", {split: {k: dict(zip(names, v["iou"])) for k, v in r.items()}
                                           for split, r in results.items()})
    io.write_json(out / "details.json", results)
    headline = next(iter(results))  # the evaluation split when there is one
    conf, rows = scoring.confusion_rows(results[headline]["network"], names)
    viz.save_confusion(out / "confusion.png", conf, rows, names, f"network vs ground truth ({headline} split)")
    text = metrics.results_table(summary, p.evaluate.match, metrics.warn_classes(n_pred, manifest["num_classes"]),
                                 extra, scoring.instances_note(manifest))
    io.write_bytes(out / "table.md", (text + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
    distributed.finish()
