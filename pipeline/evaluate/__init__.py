"""Scoring against ground truth: Hungarian-matched mIoU and pixel accuracy (`metrics`) and the baselines
(`baselines`). The only code that touches ground truth; nothing in data/backbone/method/train imports it."""
