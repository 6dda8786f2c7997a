"""The accepted ranges of a render request, in one place for validation and error messages."""

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 0.0, 30.0
# The Discord contract (the interfaces spec): 1-4 pictures a request, a 2x2 grid at most.
MIN_COUNT, MAX_COUNT = 1, 4
MAX_BATCH_IMAGES = 16
# The largest seed, rendered and recorded as given: the journal keeps seeds as SQLite's
# signed 64-bit integers. torch's CPU generator takes it whole (its initial noise reads the
# low 32 bits, as the web UI's CPU noise does; DPM++ SDE's Brownian tree and the prompt draws
# read every bit), and the web UI writes seeds past 2**32 - 1 as typed.
MAX_SEED = 2**63 - 1
# A random seed is drawn below this, as the web UI draws its own: short enough to type.
RANDOM_SEEDS = 2**32
# torch's CPU generator takes a seed below this: the web UI's, and so another UI's, go up to it.
TORCH_SEEDS = 2**64
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
STEPS_ACCEPTS = f"a whole number {between(MIN_STEPS, MAX_STEPS)}"
CFG_ACCEPTS = f"a number {between(MIN_CFG, MAX_CFG)}"
COUNT_ACCEPTS = f"a whole number {between(MIN_COUNT, MAX_COUNT)}"
CLIP_SKIP_ACCEPTS = f"a whole number {between(1, MAX_CLIP_SKIP)}"


def out_of_range(name: str, accepts: str, value: object) -> str:
    """The one refusal of ``value`` given for ``name``: what it accepts (``*_ACCEPTS``), and
    the value exactly as given (repr: never rounded, so 30.0000001 is not told as 30)."""
    return f"{name} must be {accepts}, got {value!r}"


def seed_refusal(name: str, seed: int | None) -> str | None:
    """The refusal of ``seed`` given for ``name`` (a seed, a variation seed), or None where
    it is taken: -1 or None for a random one, else one up to ``MAX_SEED``."""
    if seed is None or seed == -1 or 0 <= seed <= MAX_SEED:
        return None
    return out_of_range(name, SEED_ACCEPTS, seed)


def written_seed(value: object) -> int | None:
    """The seed a picture's text's ``value`` renders again at: one the seed rule takes, as
    written; one past ``MAX_SEED`` that torch takes (another UI's 64-bit seed, which the
    journal could not store), its low 32 bits, which draw the same CPU initial noise; else
    None, a random seed (negative, past 64 bits, not a whole number: it names no noise)."""
    if not isinstance(value, int) or not 0 <= value < TORCH_SEEDS:
        return None
    return value if value <= MAX_SEED else value % RANDOM_SEEDS


def written_seed_note(value: object, name: str = "seed") -> str | None:
    """What a note says where a picture's text's seed ``value`` (its ``name``: a seed, a
    variation seed) does not render as written (``written_seed``), naming it where it is a
    number of 64 bits at most; None where it does, and where the text asks for a random one
    (-1) or says none."""
    seed = written_seed(value)
    if value is None or value == -1 or seed == value:
        return None
    if seed is not None:
        return (
            f"the picture's {name} {value} is past {MAX_SEED}, the largest kept here; {name} "
            f"{seed} (its low 32 bits: the same initial noise) is used"
        )
    named = isinstance(value, int) and abs(value) < TORCH_SEEDS
    shown = f" {value}" if named else ""
    return (
        f"the picture's {name}{shown} is not a whole number {between(0, MAX_SEED)}; a random "
        f"{name} is used"
    )
