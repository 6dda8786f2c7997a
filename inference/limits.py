"""The accepted ranges of a render request, in one place for validation and error messages."""

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 0.0, 30.0
# The Discord contract (the interfaces spec): 1-4 pictures a request, a 2x2 grid at most.
MIN_COUNT, MAX_COUNT = 1, 4
MAX_BATCH_IMAGES = 16
MAX_SEED = 2**32 - 1
# The largest seed a member may give (typed, or in a picture's text): torch's CPU generator
# takes one below 2**64 and its noise reads the low 32 bits, so a seed past ``MAX_SEED`` (the
# web UI's seed + i past it) renders as the seed of those bits (``seed_read_back``).
MAX_GIVEN_SEED = 2**64 - 1
# SD1.x's text encoder has 12 layers; the encoder checks the loaded model's own count.
MAX_CLIP_SKIP = 12
DEFAULT_CLIP_SKIP = 1  # the text encoder's last layer: no clip skip


def between(low: float, high: float) -> str:
    """A range as refusals say it: a float's ends short (0, 30, 0.5), an int's whole."""

    def shown(end: float) -> str:
        return f"{end:g}" if isinstance(end, float) else str(end)

    return f"between {shown(low)} and {shown(high)}"


# What each value accepts, in the words of every refusal of it: a prompt's flag, a Remix
# field, a /settings or preset value, a request the engine is given.
SEED_ACCEPTS = f"a whole number {between(0, MAX_SEED)}, or -1 for a random seed"
GIVEN_SEED_ACCEPTS = f"a whole number {between(0, MAX_GIVEN_SEED)}, or -1 for a random seed"
STEPS_ACCEPTS = f"a whole number {between(MIN_STEPS, MAX_STEPS)}"
CFG_ACCEPTS = f"a number {between(MIN_CFG, MAX_CFG)}"
COUNT_ACCEPTS = f"a whole number {between(MIN_COUNT, MAX_COUNT)}"
CLIP_SKIP_ACCEPTS = f"a whole number {between(1, MAX_CLIP_SKIP)}"


def out_of_range(name: str, accepts: str, value: object) -> str:
    """The one refusal of ``value`` given for ``name``: what it accepts (``*_ACCEPTS``), and
    the value exactly as given (repr: never rounded, so 30.0000001 is not told as 30)."""
    return f"{name} must be {accepts}, got {value!r}"


def seed_refusal(name: str, seed: int | None, *, given: bool = False) -> str | None:
    """The refusal of ``seed`` given for ``name`` (a seed, a variation seed), or None where
    it is taken: -1 or None for a random one, else one in 32 bits; or, ``given`` by a member
    (``--seed``, /imagine's, Remix's, the command line's), one up to ``MAX_GIVEN_SEED``,
    which renders as ``seed_read_back`` reads it."""
    top, accepts = (MAX_GIVEN_SEED, GIVEN_SEED_ACCEPTS) if given else (MAX_SEED, SEED_ACCEPTS)
    if seed is None or seed == -1 or 0 <= seed <= top:
        return None
    return out_of_range(name, accepts, seed)
