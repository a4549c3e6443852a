"""The application: data, checkpoints, the training run, files, threads and figures, which the commands use."""
