"""Check the parity oracle (reference.py) against k-diffusion itself, by hand (not a test:
k-diffusion's package imports its training extras, so it is no dependency of Easel's).

    pip download k-diffusion==0.1.1.post1 --no-deps -d /tmp/kd
    unzip -q /tmp/kd/k_diffusion-0.1.1.post1-py3-none-any.whl -d /tmp/kd/unpacked
    python -m tests.parity.check_reference_with_k_diffusion /tmp/kd/unpacked/k_diffusion

Only ``sampling.py`` and ``external.py`` are loaded, with stand-ins for the two names they take
from elsewhere (``utils.append_dims``; torchdiffeq, used by samplers the web UI does not run).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

from tests.parity import reference


def _load(package: Path) -> tuple[Any, Any]:
    root = types.ModuleType("k_diffusion")
    root.__path__ = []
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]  # type: ignore[attr-defined]
    root.utils = utils  # type: ignore[attr-defined]
    sys.modules |= {"k_diffusion": root, "k_diffusion.utils": utils}
    sys.modules["torchdiffeq"] = types.ModuleType("torchdiffeq")
    sys.modules["torchdiffeq"].odeint = None  # type: ignore[attr-defined]
    loaded = []
    for name in ("sampling", "external"):
        spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", package / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        setattr(root, name, module)
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[0], loaded[1]


def _denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A stand-in model with some non-linearity."""
    sigma = torch.as_tensor(sigma).reshape(-1)[:1].reshape(1, 1, 1, 1)
    return x / (1 + sigma**2) + 0.1 * torch.tanh(x)


class _NoiseFromPictures:
    """k-diffusion's ``torch`` with ``randn_like`` drawing from the pictures' generators."""

    def __init__(self, noise: reference.PictureNoise) -> None:
        self.noise = noise

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def randn_like(self, _x: torch.Tensor) -> torch.Tensor:
        return self.noise.next()


def main(package: Path) -> None:
    sampling, external = _load(package)
    model = reference.CompVisSigmas(0.00085, 0.012)
    holder = types.SimpleNamespace(alphas_cumprod=model.alphas_cumprod)
    denoiser = external.CompVisDenoiser(holder)
    for steps in (6, 13):
        pairs = {
            "Uniform": denoiser.get_sigmas(steps),
            "Karras": sampling.get_sigmas_karras(steps, model.sigma_min, model.sigma_max),
            "Exponential": sampling.get_sigmas_exponential(steps, model.sigma_min, model.sigma_max),
            "Polyexponential": sampling.get_sigmas_polyexponential(
                steps, model.sigma_min, model.sigma_max
            ),
        }
        for name, theirs in pairs.items():
            same = torch.allclose(theirs, reference.schedule(name, steps, model))
            print(f"{name} sigmas, {steps} steps: {'equal' if same else 'DIFFERENT'}")
    probe = torch.tensor([5.0, 1.0, 0.1])
    same_t = torch.allclose(denoiser.sigma_to_t(probe), model.sigma_to_t(probe))
    print(f"sigma_to_t: {'equal' if same_t else 'DIFFERENT'}")

    sigmas = reference.schedule("Karras", 8, model)
    start = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    for name in ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde"):
        theirs_noise, ours_noise = (reference.PictureNoise([1, 2], (4, 8, 8)) for _ in range(2))
        theirs_noise.first()
        ours_noise.first()
        sampling.torch = _NoiseFromPictures(theirs_noise)
        extra = {}
        if name == "dpmpp_sde":
            extra["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                start, sigmas[sigmas > 0].min(), sigmas.max(), seed=[1, 2]
            )
        theirs = getattr(sampling, f"sample_{name}")(
            lambda x, sigma, **_: _denoiser(x, sigma), start, sigmas, disable=True, **extra
        )
        sampling.torch = torch
        ours = getattr(reference, name)(_denoiser, start, sigmas, noise=ours_noise, seeds=[1, 2])
        print(f"sample_{name}: max |difference| {float((theirs - ours).abs().max()):.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
