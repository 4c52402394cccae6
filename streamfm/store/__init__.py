"""What a run leaves on disk: model files and checkpoints (one archive format), nested states."""
