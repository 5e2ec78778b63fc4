"""The diffusion process (schedules, q_sample, posterior, objectives, losses, the bound) and its samplers.

Networks live elsewhere (`genzoo.models.unet`, `genzoo.models.dit`): everything here takes the network,
or a denoise callable built from it, as an argument.
"""
