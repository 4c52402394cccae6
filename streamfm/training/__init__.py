"""Training: the epoch loop over source -> features -> learner, with its run state, evaluation,
bad-row policy, chunk cache and shuffle window, checkpoints and signals."""
