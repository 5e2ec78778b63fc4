"""genzoo: a PyTorch zoo of image generative models with one trainer and one evaluation harness."""

__version__ = "0.1.0"
