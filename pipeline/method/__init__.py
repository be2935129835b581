"""The unsupervised method, label-free: mask proposals (normalized cut, motion), the distillation's selection of
detections (`distill`), clustering of mask embeddings, the reliability filter and the Leopart-style merge. Never imports evaluation code or a stage."""
