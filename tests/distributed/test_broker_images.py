"""Where a result's PNGs travel: inside the result message when small, the object store when not."""

from __future__ import annotations

import os

import nats as nats_client
from PIL import Image

from bot.jobs.broker.wire import IMAGES_BUCKET, INLINE_IMAGES_MAX_BYTES, inline_images_budget
from inference.infotext import png_with_infotext
from inference.types import RenderedImage, RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

NOISE_SIDE = 512  # random RGB barely compresses: about 768 KiB of PNG, over the inline budget


class NoisyEngine(InstantEngine):
    """Pictures of random noise, so the PNG is as large as the pixels."""

    @staticmethod
    def _pictures(request: RenderRequest) -> list[RenderedImage]:
        picture = Image.frombytes("RGB", (NOISE_SIDE, NOISE_SIDE), os.urandom(NOISE_SIDE**2 * 3))
        infotext = f"{request.prompt}\nSeed: {request.seed}"
        png = png_with_infotext(picture, infotext)
        return [RenderedImage(png, request.seed, infotext, NOISE_SIDE, NOISE_SIDE)]


async def stored_object_names(url: str) -> list[str]:
    observer = await nats_client.connect(url)
    try:
        bucket = await observer.jetstream().object_store(IMAGES_BUCKET)
        try:
            return [info.name for info in await bucket.list(ignore_deletes=True)]
        except nats_client.js.errors.NotFoundError:
            return []  # an empty bucket answers "no objects found"
    finally:
        await observer.close()


def test_the_inline_budget_stays_under_half_the_servers_payload_limit() -> None:
    assert inline_images_budget(1024 * 1024) == INLINE_IMAGES_MAX_BYTES
    assert inline_images_budget(64 * 1024) == 32 * 1024


async def test_small_pngs_ride_in_the_result_message(nats: NatsTransport) -> None:
    client = await nats.client()
    nats.start_worker(InstantEngine())
    images = await client.render("job-small", RenderRequest("a cat", seed=5, count=2), None, None)
    assert [image.seed for image in images] == [5, 6]
    assert all(image.png.startswith(b"\x89PNG") for image in images)
    assert await stored_object_names(nats.server.url) == []


async def test_large_pngs_go_through_the_object_store(nats: NatsTransport) -> None:
    client = await nats.client()
    engine = NoisyEngine()
    nats.start_worker(engine)
    (image,) = await client.render("job-large", RenderRequest("noise", seed=3), None, None)
    assert len(image.png) > INLINE_IMAGES_MAX_BYTES
    (name,) = await stored_object_names(nats.server.url)
    assert name.startswith("job-large/1-") and name.endswith("-0.png")  # delivery 1, picture 0
    # A restarted bot collects the same bytes from the store.
    (again,) = await (await nats.client()).render(
        "job-large", RenderRequest("noise", seed=3), None, None
    )
    assert again.png == image.png and again.seed == 3 and len(engine.rendered) == 1
