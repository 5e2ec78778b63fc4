"""Evaluation harness: sample grids now; metrics (FID, FD, KID, P/R, bits/dim) plug in here."""
