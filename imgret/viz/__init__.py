"""Pictures of the work: loss curves, reconstructions, elbow plot, result grids, clusters."""
