"""The segmentation network trained on the pseudo-labels (`segnet`: models, training loop, self-training,
DDP), its resumable checkpoints (`checkpoint`) and the distill stage's class-agnostic Mask R-CNN (`detector`).
Never imports evaluation code."""
