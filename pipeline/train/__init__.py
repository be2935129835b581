"""The segmentation network trained on the pseudo-labels, one file per job: `models` (encoder + decoder), `data`
(augmentation, datasets, the batch plan), `optim` (optimiser, schedule, freezing), `loop` (`fit`), `selftrain`
(rounds, relabelling), `predict` (the one prediction path and the prediction folders), `live` (curves),
`checkpoint` (resume), `crf` (dense CRF); and the distill stage's class-agnostic Mask R-CNN (`detector`). Never
imports evaluation code."""
