"""A test oracle for web UI seed parity: txt2img the way the Stable Diffusion web UI (1.9/1.10,
default settings, RNG source CPU) samples, driving a diffusers UNet / text encoder / VAE.

Written from the web UI's and k-diffusion's conventions (facts only, no code of theirs):

- the model's sigmas are k-diffusion's ``CompVisDenoiser`` discretisation of the training
  schedule (float64 betas as LDM builds them), timesteps between them interpolated in log sigma;
- schedules by the web UI's "Schedule type" names; "Automatic" is each sampler's own default;
  DPM2-family samplers drop the penultimate sigma;
- one CPU generator per picture seeded with its seed draws the initial noise, then every
  ancestral noise (variation seeds: a second noise from the variation seed, slerped per column);
- DPM++ SDE's Brownian tree is seeded with the picture's seed over the schedule's sigma range;
- CFG combines the denoised predictions (cond first, uncond last in one batch);
- DDIM uses ``range(0, 1000, 1000 // steps) + 1`` timesteps and skips the lowest one;
- LCM reads the model at the 50 timesteps an LCM was distilled on (19, 39, ... 999): its sigma
  range is theirs, each sigma goes to the nearest of them, and the prediction takes the
  consistency boundary scalings (sigma_data 0.5, timestep x 10); then x = denoised + next sigma
  times fresh noise;
- decoding truncates to 8 bits (``astype(uint8)``), it does not round.

It deliberately shares no code with ``inference/``: it is what Easel is measured against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchsde
from PIL import Image

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma) -> denoised x


@dataclass(frozen=True)
class SamplerInfo:
    function: str
    default_schedule: str = "Uniform"
    discard_penultimate: bool = False


# The web UI 1.9 sampler table: name -> (k-diffusion function, Automatic schedule, discard).
SAMPLERS = {
    "Euler a": SamplerInfo("euler_ancestral"),
    "Euler": SamplerInfo("euler"),
    "DPM++ 2M": SamplerInfo("dpmpp_2m", "Karras"),
    "DPM++ SDE": SamplerInfo("dpmpp_sde", "Karras"),
    "DDIM": SamplerInfo("ddim"),
    "LCM": SamplerInfo("lcm"),
}


class _SigmaTable:
    """A model's sigmas from the smallest to the largest."""

    sigmas: torch.Tensor
    log_sigmas: torch.Tensor

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The sigma at (fractional) index ``t`` of the table, interpolated in log sigma."""
        t = t.float()
        low, high, weight = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])


class CompVisSigmas(_SigmaTable):
    """The model's 1000 sigmas and k-diffusion's conversions between sigma and timestep."""

    def __init__(self, beta_start: float, beta_end: float, train_steps: int = 1000) -> None:
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, train_steps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1 - betas**2, dim=0).to(torch.float32)
        self.alphas_cumprod = alphas_cumprod
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        distances = log_sigma - self.log_sigmas[:, None]
        last = self.log_sigmas.shape[0] - 2
        low_index = distances.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=last)
        low, high = self.log_sigmas[low_index], self.log_sigmas[low_index + 1]
        weight = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - weight) * low_index + weight * (low_index + 1)).view(sigma.shape)


class LCMSigmas(_SigmaTable):
    """The web UI's LCM denoiser's view of the model: its sigmas at the 50 LCM timesteps."""

    def __init__(self, model: CompVisSigmas, original_steps: int = 50) -> None:
        train_steps = len(model.alphas_cumprod)
        self.skip = train_steps // original_steps
        alphas = torch.stack(
            [model.alphas_cumprod[train_steps - 1 - i * self.skip] for i in range(original_steps)]
        ).flip(0)
        self.sigmas = ((1 - alphas) / alphas) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        nearest = (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)
        return nearest * self.skip + (self.skip - 1)

    def uniform(self, steps: int) -> torch.Tensor:
        """The web UI LCM denoiser's own schedule: timesteps from the largest LCM timestep to
        the smallest, evenly, each as its fractional place in the table, then 0."""
        return _with_zero(self.t_to_sigma(torch.linspace(len(self.sigmas) - 1, 0, steps)))


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def schedule(name: str, steps: int, model: CompVisSigmas) -> torch.Tensor:
    """``steps`` sigmas by the web UI's schedule type, then 0."""
    low, high = model.sigma_min, model.sigma_max
    if name == "Uniform":
        t = torch.linspace(len(model.sigmas) - 1, 0, steps)
        return _with_zero(model.t_to_sigma(t))
    if name == "SGM Uniform":
        start, end = model.sigma_to_t(torch.tensor(high)), model.sigma_to_t(torch.tensor(low))
        ts = torch.linspace(float(start), float(end), steps + 1)[:-1]
        return torch.tensor([float(model.t_to_sigma(t)) for t in ts] + [0.0])
    return range_schedule(name, steps, low, high)


def range_schedule(name: str, steps: int, low: float, high: float) -> torch.Tensor:
    """``steps`` sigmas from ``high`` to ``low`` by a schedule type that needs only the
    range, then 0."""
    if name == "Karras":
        ramp = torch.linspace(0, 1, steps)
        rho = 7.0
        return _with_zero(
            (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
        )
    if name == "Exponential":
        return _with_zero(torch.linspace(math.log(high), math.log(low), steps).exp())
    if name == "Polyexponential":
        ramp = torch.linspace(1, 0, steps)  # rho 1
        return _with_zero(torch.exp(ramp * (math.log(high) - math.log(low)) + math.log(low)))
    raise ValueError(f"no schedule {name!r}")


def sigmas_for(sampler: str, schedule_type: str, steps: int, model: CompVisSigmas) -> torch.Tensor:
    info = SAMPLERS[sampler]
    name = info.default_schedule if schedule_type == "Automatic" else schedule_type
    if info.discard_penultimate:
        sigmas = schedule(name, steps + 1, model)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return schedule(name, steps, model)


def slerp_columns(fraction: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The web UI's slerp of two (C, H, W) noises: normalised along dim 1, per (c, w) column."""
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * fraction + high * (1 - fraction)  # the web UI's order, kept
    omega = torch.acos(dot)
    sine = torch.sin(omega)
    return (torch.sin((1 - fraction) * omega) / sine).unsqueeze(1) * low + (
        torch.sin(fraction * omega) / sine
    ).unsqueeze(1) * high


class PictureNoise:
    """Per-picture CPU generators: the first draw is the initial noise, later draws feed the
    ancestral steps."""

    def __init__(
        self,
        seeds: list[int],
        shape: tuple[int, int, int],
        variation_seed: int | None = None,
        variation_strength: float = 0.0,
    ) -> None:
        self.shape = shape
        self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        self.variation_seed = variation_seed
        self.variation_strength = variation_strength

    def first(self) -> torch.Tensor:
        noises = []
        for generator in self.generators:
            noise = torch.randn(self.shape, generator=generator)
            if self.variation_seed is not None and self.variation_strength != 0:
                torch.manual_seed(self.variation_seed)
                variation = torch.randn(self.shape)
                noise = slerp_columns(self.variation_strength, noise, variation)
            noises.append(noise)
        return torch.stack(noises)

    def next(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


class BrownianNoise:
    """One Brownian tree per picture over [sigma_min, sigma_max], entropy = the seed."""

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]) -> None:
        self.t0, self.t1 = sigmas[sigmas > 0].min(), sigmas.max()
        start = torch.zeros_like(x[0])
        self.trees = [
            torchsde.BrownianTree(self.t0, start, self.t1, entropy=seed) for seed in seeds
        ]

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        low, high = sorted([torch.as_tensor(sigma), torch.as_tensor(sigma_next)], key=float)
        sign = 1 if float(sigma_next) > float(sigma) else -1
        draws = torch.stack([tree(low, high) for tree in self.trees]) * sign
        return draws / (high - low).abs().sqrt()


def _ancestral(sigma: torch.Tensor, sigma_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    up = torch.minimum(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def euler(model: Model, x: torch.Tensor, sigmas: torch.Tensor, **_: Any) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(
    model: Model, x: torch.Tensor, sigmas: torch.Tensor, noise: PictureNoise, **_: Any
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = _ancestral(sigmas[i], sigmas[i + 1])
        x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise.next() * up
    return x


def lcm(
    model: Model, x: torch.Tensor, sigmas: torch.Tensor, noise: PictureNoise, **_: Any
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise.next()
    return x


def dpmpp_2m(model: Model, x: torch.Tensor, sigmas: torch.Tensor, **_: Any) -> torch.Tensor:
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - -sigmas[i - 1].log()) / h
            corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * corrected
        old_denoised = denoised
    return x


def dpmpp_sde(
    model: Model, x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int], **_: Any
) -> torch.Tensor:
    brownian = BrownianNoise(x, sigmas, seeds)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if sigma_next == 0:
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
            continue
        t, t_next = -sigma.log(), -sigma_next.log()
        sigma_mid = (-(t + (t_next - t) / 2)).exp()
        down, up = _ancestral(sigma, sigma_mid)
        x_mid = (down / sigma) * x - (t + down.log()).expm1() * denoised
        x_mid = x_mid + brownian(sigma, sigma_mid) * up
        denoised_mid = model(x_mid, sigma_mid)
        down, up = _ancestral(sigma, sigma_next)
        # k-diffusion blends (1 - 1/2r) * denoised + 1/2r * denoised_mid: at r = 1/2 the
        # midpoint's prediction alone.
        x = (down / sigma) * x - (t + down.log()).expm1() * denoised_mid
        x = x + brownian(sigma, sigma_next) * up
    return x


@dataclass
class Parts:
    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    sigmas: CompVisSigmas


def parts_of(pipeline: Any) -> Parts:
    config = pipeline.scheduler.config
    return Parts(
        pipeline.unet,
        pipeline.text_encoder,
        pipeline.tokenizer,
        pipeline.vae,
        CompVisSigmas(config.beta_start, config.beta_end, config.num_train_timesteps),
    )


def encode(parts: Parts, prompt: str) -> torch.Tensor:
    """One 75-token chunk: BOS, the prompt's tokens, EOS, padded with EOS (SD1); weights 1."""
    tokens = parts.tokenizer(prompt, add_special_tokens=False).input_ids[:75]
    bos, eos = parts.tokenizer.bos_token_id, parts.tokenizer.eos_token_id
    ids = [bos, *tokens, eos] + [eos] * (75 - len(tokens))
    hidden: torch.Tensor = parts.text_encoder(torch.tensor([ids]))[0]
    return hidden


def _cfg_eps(parts: Parts, prompt: str, negative: str, cfg_scale: float) -> Eps:
    conds = torch.cat([encode(parts, prompt), encode(parts, negative)])

    def eps(x: torch.Tensor, timestep: torch.Tensor, scale_in: torch.Tensor) -> torch.Tensor:
        both = torch.cat([x, x]) * scale_in
        out = parts.unet(both, timestep, encoder_hidden_states=conds).sample
        cond, uncond = out.chunk(2)
        return uncond + (cond - uncond) * cfg_scale

    return eps


def txt2img_latents(
    parts: Parts,
    prompt: str,
    negative: str,
    seed: int,
    steps: int,
    cfg_scale: float,
    size: tuple[int, int],
    sampler: str,
    schedule_type: str = "Automatic",
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> torch.Tensor:
    """One txt2img picture's final latents as the web UI samples them."""
    with torch.inference_mode():
        noise = PictureNoise([seed], _latent_shape(parts, size), variation_seed, variation_strength)
        x = noise.first()
        eps = _cfg_eps(parts, prompt, negative, cfg_scale)
        if SAMPLERS[sampler].function == "ddim":
            return _ddim(parts, x, steps, eps)
        sigmas, model = _sigmas_and_model(parts, sampler, schedule_type, steps, eps)
        function = globals()[SAMPLERS[sampler].function]
        latents: torch.Tensor = function(model, x * sigmas[0], sigmas, noise=noise, seeds=[seed])
        return latents


def render(
    parts: Parts,
    prompt: str,
    negative: str,
    seed: int,
    steps: int,
    cfg_scale: float,
    size: tuple[int, int],
    sampler: str,
    schedule_type: str = "Automatic",
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> Image.Image:
    """One txt2img picture as the web UI makes it."""
    latents = txt2img_latents(
        parts,
        prompt,
        negative,
        seed,
        steps,
        cfg_scale,
        size,
        sampler,
        schedule_type,
        variation_seed,
        variation_strength,
    )
    return decode(parts, latents)


def _latent_shape(parts: Parts, size: tuple[int, int]) -> tuple[int, int, int]:
    return (parts.unet.config.in_channels, size[1] // 8, size[0] // 8)


def decode(parts: Parts, latents: torch.Tensor) -> Image.Image:
    """The picture of ``latents``, truncated to 8 bits as the web UI saves it."""
    with torch.inference_mode():
        image = parts.vae.decode(latents / parts.vae.config.scaling_factor).sample[0]
    pixels = torch.clamp((image + 1) / 2, 0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((255.0 * pixels).astype(np.uint8))


def encode_image(parts: Parts, image: Image.Image) -> torch.Tensor:
    """A picture's latents: the VAE posterior's mean, scaled. (The web UI samples the posterior
    from the unseeded global RNG; a trained VAE's posterior is so narrow that this is its
    mean, so the mean is what a reproducible picture can match.)"""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    with torch.inference_mode():
        batch = pixels.permute(2, 0, 1)[None] * 2 - 1
        mean: torch.Tensor = parts.vae.encode(batch).latent_dist.mean
        return mean * parts.vae.config.scaling_factor


def img2img_schedule(steps: int, denoising: float, fixed_steps: int | None) -> tuple[int, int]:
    """(schedule length, t_enc): the web UI's img2img step set-up. With ``fixed_steps`` (the
    hires pass, or the img2img_fix_steps setting) the schedule is stretched so that exactly
    that many steps run; otherwise the last ``t_enc + 1`` of ``steps`` run."""
    strength = min(denoising, 0.999)
    if fixed_steps is not None:
        requested = fixed_steps or steps
        return int(requested / strength), requested - 1
    return steps, int(strength * steps)


def img2img_latents(
    parts: Parts,
    init: torch.Tensor,
    prompt: str,
    negative: str,
    seed: int,
    steps: int,
    cfg_scale: float,
    sampler: str,
    denoising: float,
    schedule_type: str = "Automatic",
    fixed_steps: int | None = None,
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> torch.Tensor:
    """img2img from the latents ``init``: a fresh per-picture noise (the seed's first draw) at
    the first sigma run, then the sampler on the rest of the schedule (ancestral noise from the
    same generator, after that first draw)."""
    with torch.inference_mode():
        noise = PictureNoise([seed], tuple(init.shape[1:]), variation_seed, variation_strength)  # type: ignore[arg-type]
        eps = _cfg_eps(parts, prompt, negative, cfg_scale)
        total, t_enc = img2img_schedule(steps, denoising, fixed_steps)
        sigmas, model = _sigmas_and_model(parts, sampler, schedule_type, total, eps)
        run = sigmas[total - t_enc - 1 :]
        x = init + noise.first() * run[0]
        function = globals()[SAMPLERS[sampler].function]
        latents: torch.Tensor = function(model, x, run, noise=noise, seeds=[seed])
        return latents


def hires_upscaled(
    parts: Parts, latents: torch.Tensor, size: tuple[int, int], upscaler: str
) -> torch.Tensor:
    """The hires pass's starting latents at ``size``: Lanczos on the decoded 8-bit picture then
    the VAE's encoding, or the latents interpolated ("Latent": bilinear, "Latent (nearest)")."""
    if upscaler == "Lanczos":
        picture = decode(parts, latents).resize(size, Image.Resampling.LANCZOS)
        return encode_image(parts, picture)
    mode = {"Latent": "bilinear", "Latent (nearest)": "nearest"}[upscaler]
    return torch.nn.functional.interpolate(latents, size=(size[1] // 8, size[0] // 8), mode=mode)


Eps = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _sigmas_and_model(
    parts: Parts, sampler: str, schedule_type: str, steps: int, eps: Eps
) -> tuple[torch.Tensor, Model]:
    """The sampler's sigmas and its denoiser (x, sigma) -> denoised x on the CFG'd ``eps``."""
    if sampler == "LCM":
        lcm_sigmas = LCMSigmas(parts.sigmas)

        def lcm_model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            t = lcm_sigmas.sigma_to_t(sigma)
            clean = x - sigma * eps(x, t.float(), 1 / (sigma**2 + 1) ** 0.5)
            scaled = t * 10.0
            c_skip = 0.25 / (scaled**2 + 0.25)
            c_out = scaled / (scaled**2 + 0.25) ** 0.5
            denoised: torch.Tensor = c_out * clean + c_skip * x
            return denoised

        if schedule_type in ("Automatic", "Uniform"):
            return lcm_sigmas.uniform(steps), lcm_model
        low, high = lcm_sigmas.sigma_min, lcm_sigmas.sigma_max
        return range_schedule(schedule_type, steps, low, high), lcm_model

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        scale_in = 1 / (sigma**2 + 1) ** 0.5
        return x - sigma * eps(x, parts.sigmas.sigma_to_t(sigma), scale_in)

    return sigmas_for(sampler, schedule_type, steps, parts.sigmas), model


def _ddim(
    parts: Parts,
    x: torch.Tensor,
    steps: int,
    eps: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The web UI's DDIM (eta 0): its timesteps list, every entry but the lowest evaluated."""
    alphas_cumprod = parts.sigmas.alphas_cumprod
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
    previous = torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[previous].to(torch.float64)
    one = torch.ones(())
    for index in range(len(timesteps) - 1, 0, -1):
        e_t = eps(x, timesteps[index].float().reshape(1), one)
        a_t, a_prev = float(alphas[index]), float(alphas_prev[index])
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t**0.5
        x = a_prev**0.5 * pred_x0 + (1 - a_prev) ** 0.5 * e_t
    return x


def psnr(first: Image.Image, second: Image.Image) -> float:
    a = np.asarray(first.convert("RGB"), dtype=np.float64)
    b = np.asarray(second.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
