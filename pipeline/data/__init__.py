"""Datasets the prepare stage materialises (synthetic default, image folder, PASCAL VOC 2012, COCO 2017,
videos and generated clips) and optical flow between video frames (`flow`), which both the motion proposals
and the video pretext objectives use. Imports no method code."""
