"""The segmentation network trained on the pseudo-labels (`segnet`: models, training loop, self-training,
DDP) and its resumable checkpoints (`checkpoint`). Never imports evaluation code."""
