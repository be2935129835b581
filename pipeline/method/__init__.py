"""The unsupervised method, label-free: mask proposals (normalized cut, motion), the distillation's selection of
detections (`distill`), clustering of mask embeddings, the reliability filter, the Leopart-style merge and the label
maps they write (the training labels). Never imports evaluation code or a stage."""
