"""Names of model config fields that code outside the model layer needs without importing torch (the option
modules, which `--help` reads)."""

# The fields the data set decides: never set by a user, always by the data's geometry.
GEOMETRY_FIELDS = frozenset({"channels", "image_height", "image_width", "num_classes"})

MAX_LATENT = 4096  # the study's largest latent is 100; a larger code only asks for memory (train's option checks it too)
MAX_SIDE = 4096  # pixels along an image side: what a checkpoint may record, so --image-size may not exceed it
