"""Stage 4: datasets: the zarr store, parallel simulation, the PyTorch training Dataset."""
