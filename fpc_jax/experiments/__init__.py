"""What a user runs: config schemas, vmapped sweeps, results on disk and plots."""
