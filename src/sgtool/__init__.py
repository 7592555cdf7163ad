"""sgtool: invert and edit real photos and videos with StyleGAN3 and StyleGAN2."""

__version__ = "0.1.0"
