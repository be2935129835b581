"""The unsupervised method, label-free: mask proposals (normalized cut, motion), clustering of mask
embeddings, the reliability filter and the Leopart-style merge. Never imports evaluation code or a stage."""
