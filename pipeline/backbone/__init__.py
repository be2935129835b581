"""The feature extractor: the timm ViT factory (`factory`: file, hub, pretrain or random weights), dense
patch tokens and attention keys (`features`), and the self-supervised objectives that train it here
(`dino`, `pretext/`). Imports no method code."""
