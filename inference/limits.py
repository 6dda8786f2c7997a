"""The accepted ranges of a render request, in one place for validation and error messages."""

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 0.0, 30.0
MIN_COUNT, MAX_COUNT = 1, 8
MAX_BATCH_IMAGES = 16
MAX_SEED = 2**32 - 1
# SD1.x's text encoder has 12 layers; the encoder checks the loaded model's own count.
MAX_CLIP_SKIP = 12
