"""The page at ``/``: pick an image, tick classes to forget, see both answers side by side."""

PAGE = "<!doctype html><title>wfkern serve</title><p>wfkern serve</p>"
