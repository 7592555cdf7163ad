"""`sgtool translate`: pSp's image-to-image tasks (sketch / segmentation to face, super-resolution,
frontalisation, toonify) and their multi-modal outputs by style mixing."""
