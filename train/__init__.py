"""Training: image sources, tasks mixed by ratio, one loop for every recipe (single process or torchrun),
checkpoints."""
