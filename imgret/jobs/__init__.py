"""The stages as resumable jobs (train, index, cluster, search, demo): what the CLI and web call."""
