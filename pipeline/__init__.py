"""unseg's library: unlabeled images in, a trained semantic segmentation network out.

One subpackage per part of the architecture; the stages (`stages/`) are thin scripts over them.

- `config`: params.yaml -> validated, frozen config objects; `io`: every artifact read and written.
- `data`: what the prepare stage reads (synthetic, folder, VOC, COCO, video) and optical flow on frames.
- `backbone`: the timm ViT factory, dense features, DINO and the pretext objectives.
- `method`: the label-free method: proposals, motion, cluster, filter, merge.
- `train`: the segmentation network and its checkpoints.
- `evaluate`: metrics and baselines, the only code that touches ground truth.
- `report`: pictures, the report page, the inspect command.

`Segmenter` (from `pipeline.train.segmenter`) is the trained network for any image; `python -m pipeline` (cli.py)
the command line.
"""

__all__ = ["Segmenter"]


def __getattr__(name: str):
    """`from pipeline import Segmenter` (pipeline/train/segmenter.py), imported on first use only: the stages,
    which import pipeline's parts, never load it."""
    if name == "Segmenter":
        from pipeline.train.segmenter import Segmenter
        return Segmenter
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
