"""Scoring against ground truth: Hungarian-matched mIoU, pixel accuracy and class-agnostic mask AP (`metrics`) and
the baselines (`baselines`). The only code that touches ground truth; nothing in data/backbone/method/train
imports it."""
