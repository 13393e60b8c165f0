"""Stage 5: training the column-depth U-Net."""
