"""Training: schedule, batches, the step module (losses), checkpoints, the accelerate loop."""
