"""Scoring against ground truth: Hungarian-matched mIoU and pixel accuracy (`metrics`), class-agnostic mask AP50 by
COCOeval (`mask_ap`), the label-free baselines (`baselines`) and the evaluate stage's run over every label map
(`scoring`). The only code that touches ground truth; nothing in data/backbone/method/train imports it."""
