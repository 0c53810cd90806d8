"""Train the quality lab's models on CPU (or ``--device cuda``), deterministically, from scratch.

    python tools/lab/train.py all            # autoencoder, latents, main U-Net, weak U-Net (~1 h on 2 CPU cores)
    python tools/lab/train.py vae|latents|unet|weak|dit [--steps N] [--device cuda]

Run it in the host's Python (``.host/venv/bin/python``; ``tools/harness/host.py --print-python`` prints it).  Outputs go to
``tools/lab/weights/`` (fp16 safetensors, committed, so nobody has to train to use them); the encoded training latents
are cached under ``.host/lab-cache/``.

- **Autoencoder**: ComfyUI's TAESD (4-channel latents at 1/8 of the side), trained on 64 px crops of the scenes with
  L1 + MSE, latent noise (so the decoder tolerates imperfect latents) and a penalty that keeps every latent channel
  near zero mean and unit spread; ``vae_scale`` is SD1.5's 0.18215, so the U-Net sees unit-spread latents.
- **U-Nets**: SD1.5's eps objective on SD1.5's schedule (1000 steps, scaled-linear betas), uniform timesteps, a fixed
  empty context (unconditional), horizontal flips, AdamW with warm-up and cosine decay, EMA of the weights (decay
  min(0.999, (1 + t) / (10 + t))).  The weak
  model (autoguidance's guiding model) is made as the paper makes it: a smaller U-Net trained for a quarter as long.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOOLS))

from harness.host import HOST_DIR, import_in_process  # noqa: E402

import_in_process("cpu")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from tqdm import tqdm  # noqa: E402

import comfy.taesd.taesd  # noqa: E402
from lab import models, scenes  # noqa: E402

CACHE = HOST_DIR / "lab-cache"
SD15_SCALE = 0.18215
N_SCENES = 6000          # training scenes (indices 0..N-1); evaluation uses seeds from 1_000_000 on
HELD_OUT = 1_000_000


def _init_taesd(vae: torch.nn.Module, seed: int) -> None:
    """He init; each Block's last conv zero, so every residual block starts as the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
        for m in vae.modules():
            if isinstance(m, comfy.taesd.taesd.Block):
                m.conv[-1].weight.zero_()
                if m.conv[-1].bias is not None:
                    m.conv[-1].bias.zero_()
        vae.vae_scale.fill_(SD15_SCALE)
        vae.vae_shift.zero_()


def train_vae(steps: int, device: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    _init_taesd(vae, seed)
    vae.to(device).train()
    pool = scenes.batch(range(2048)).permute(0, 3, 1, 2)  # [N, 3, 128, 128] in [0, 1]
    params = list(vae.taesd_encoder.parameters()) + list(vae.taesd_decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    bar = tqdm(range(steps), desc="autoencoder", mininterval=5)
    for _ in bar:
        idx = torch.randint(len(pool), (8,), generator=g)
        oy, ox = (int(v) * 8 for v in torch.randint(9, (2,), generator=g))
        x = pool[idx, :, oy:oy + 64, ox:ox + 64]
        if torch.rand((), generator=g) < 0.5:
            x = x.flip(-1)
        x = x.to(device)
        z = vae.taesd_encoder(x)
        noisy = z + 0.1 * torch.randn(z.shape, generator=g).to(device)
        y = vae.taesd_decoder(noisy)
        mean, std = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
        loss = (y - x).abs().mean() + (y - x).pow(2).mean() + 0.01 * (mean.pow(2) + (std - 1).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", std=f"{std.mean().item():.2f}", refresh=False)
    vae.eval()
    with torch.no_grad():
        test = scenes.batch(range(HELD_OUT, HELD_OUT + 16)).permute(0, 3, 1, 2).to(device)
        out = vae.taesd_decoder(vae.taesd_encoder(test)).clamp(0, 1)
        psnr = -10 * math.log10((out - test).pow(2).mean().item())
    print(f"autoencoder: held-out PSNR {psnr:.1f} dB")
    sd = {k: v.detach().cpu().to(torch.float16).contiguous() for k, v in vae.state_dict().items()}
    path = models.WEIGHTS_DIR / models.VAE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"megapixel_lab": "TAESD autoencoder for the quality lab scenes",
                                       "steps": str(steps), "psnr_db": f"{psnr:.2f}"})
    return path


def load_vae(device: str = "cpu") -> torch.nn.Module:
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    vae.load_state_dict({k: v.float() for k, v in load_file(str(models.WEIGHTS_DIR / models.VAE_FILE)).items()})
    return vae.to(device).eval()


def encode_latents(device: str, n: int = N_SCENES) -> Path:
    """Model-space latents (VAE latents × 0.18215) of scenes 0..n-1, cached."""
    path = CACHE / f"latents-{n}.safetensors"
    vae = load_vae(device)
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, n, 64), desc="latents", mininterval=5):
            x = scenes.batch(range(start, min(n, start + 64))).permute(0, 3, 1, 2).to(device)
            out.append((vae.encode(x * 2 - 1) * SD15_SCALE).cpu())
    lat = torch.cat(out)
    print(f"latents: {tuple(lat.shape)}, mean {lat.mean():.3f}, std {lat.std():.3f}")
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({"latents": lat.contiguous()}, str(path))
    return path


def loss_weights(sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of the eps loss: 1 + sigma², capped at 25.  An eps error at noise level sigma moves a
    sampler's latent by sigma times as much, so plain eps-MSE under-trains the high-noise steps where the layout is
    decided (uncapped, 1 + sigma² is EDM's weighting in eps terms)."""
    return (1 + sigma ** 2).clamp(max=25.0)


def _optimizer(net: torch.nn.Module, lr: float, steps: int):
    """AdamW with a 5% linear warm-up into a cosine decay to a tenth of ``lr``."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    return opt, sched


def _batch(data: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """32 random cached latents, each flipped left-right with probability 1/2."""
    x0 = data[torch.randint(len(data), (32,), generator=g)]
    flip = torch.rand(32, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x0.flip(-1), x0)


def _ema_step(ema: dict, net: torch.nn.Module, step: int) -> None:
    """EMA with the usual warm-up: early weights fade out fast."""
    d = min(0.999, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, v in net.state_dict().items():
            ema[k].mul_(d).add_(v.detach(), alpha=1 - d) if v.dtype.is_floating_point else ema[k].copy_(v)


@contextlib.contextmanager
def _out_of_place_iadd():
    """ComfyUI's Flux blocks add their residuals in place (``img += ...``), which autograd refuses; while training,
    ``+=`` on tensors makes a new tensor (same values).  Restored afterwards, so sampling runs ComfyUI's code as is."""
    original = torch.Tensor.__iadd__
    torch.Tensor.__iadd__ = lambda self, other: self + other
    try:
        yield
    finally:
        torch.Tensor.__iadd__ = original


def train_unet(kind: str, steps: int, device: str, seed: int = 0, out: Path | None = None,
               resume: Path | None = None) -> Path:
    """Train the ``kind`` ('main' or 'weak') U-Net on the cached latents (from ``resume``'s weights if given)."""
    latent_path = CACHE / f"latents-{N_SCENES}.safetensors"
    if not latent_path.exists():
        encode_latents(device)
    data = load_file(str(latent_path))["latents"]
    torch.manual_seed(seed)
    config = models.UNET_CONFIGS[kind]
    model = models.build_unet(config)
    unet, ema = _start(model, seed, _zero_init_unet, resume, device)
    ms = model.model_sampling
    sigmas = ms.sigmas.float()
    opt, sched = _optimizer(unet, 4e-4, steps)
    g = torch.Generator().manual_seed(seed + 7)
    context = models.empty_context(32).to(device)
    bar = tqdm(range(steps), desc=f"U-Net ({kind})", mininterval=5)
    for step in bar:
        x0 = _batch(data, g)
        t = torch.randint(len(sigmas), (32,), generator=g)
        sigma = sigmas[t]
        eps = torch.randn(x0.shape, generator=g)
        xt = (x0 + sigma[:, None, None, None] * eps) / (sigma[:, None, None, None] ** 2 + 1).sqrt()
        pred = unet(xt.to(device), t.float().to(device), context=context)
        w = loss_weights(sigma).to(device)
        loss = ((pred - eps.to(device)).pow(2).mean(dim=(1, 2, 3)) * w).sum() / w.sum()
        _optimise(loss, unet, opt, sched, ema, step, bar)
        if (step + 1) % 500 == 0 or step + 1 == steps:
            final = out or models.WEIGHTS_DIR / (models.UNET_FILE if kind == "main" else models.WEAK_UNET_FILE)
            target = final if step + 1 == steps else CACHE / f"{kind}w-step{step + 1}.safetensors"
            _save(models.build_unet, models.save_unet, config, ema, target,
                  {"megapixel_lab": f"{kind} U-Net, EMA weights", "steps": str(step + 1), "seed": str(seed)})
            _save(models.build_unet, models.save_unet, config, unet.state_dict(),
                  CACHE / f"{kind}w-step{step + 1}-raw.safetensors",
                  {"megapixel_lab": f"{kind} U-Net, raw weights (not EMA)", "steps": str(step + 1)})
    unet.load_state_dict(ema)
    return final


def _optimise(loss: torch.Tensor, net: torch.nn.Module, opt, sched, ema: dict, step: int, bar) -> None:
    """One training step on ``loss``: gradients clipped to norm 1, the learning-rate schedule and the EMA advanced."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    sched.step()
    _ema_step(ema, net, step)
    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)


def _start(model, seed: int, zero_init: Callable[[torch.nn.Module], None], resume: Path | None,
           device: str) -> tuple[torch.nn.Module, dict]:
    """The network to train (seeded init, the family's zero init, or ``resume``'s weights) on ``device``, and its
    EMA copy."""
    from harness import model_factory

    model_factory.init_weights(model.diffusion_model, seed)
    zero_init(model.diffusion_model)
    if resume is not None:
        sd = load_file(str(resume))
        model.diffusion_model.load_state_dict({k[len(models.PREFIX):]: v.float() for k, v in sd.items()})
    net = model.diffusion_model.to(device).train()
    return net, {k: v.detach().clone() for k, v in net.state_dict().items()}


def _save(build: Callable, save: Callable, config: dict, weights: dict, path: Path, meta: dict) -> None:
    """``weights`` written as the ComfyUI model ``build(config)`` would save them (the file the lab loader reads)."""
    snapshot = build(config)
    snapshot.diffusion_model.load_state_dict({k: v.detach().cpu() for k, v in weights.items()})
    save(snapshot, config, path, meta)


def _zero_init_unet(dm: torch.nn.Module) -> None:
    """Zero the output conv: the model starts predicting zero noise, as usual for DDPM U-Nets."""
    with torch.no_grad():
        dm.out[-1].weight.zero_()
        dm.out[-1].bias.zero_()


def _zero_init_dit(dm: torch.nn.Module) -> None:
    """adaLN-Zero, as DiTs are initialised: every modulation and the output layer start at zero, so each block starts
    as the identity and the model predicts zero velocity."""
    with torch.no_grad():
        for name, p in dm.named_parameters():
            if ".lin." in name or name.startswith("final_layer.linear") or name.startswith("final_layer.adaLN"):
                p.zero_()


def train_dit(steps: int, device: str, seed: int = 0, out: Path | None = None, resume: Path | None = None) -> Path:
    """Train the lab DiT (a ComfyUI Flux, :data:`lab.models.DIT_CONFIG`) on the same cached latents, data order
    and augmentation as the U-Net, with Flux's rectified-flow objective: ``x_t = (1 - sigma) x0 + sigma eps``,
    the model predicts the velocity ``eps - x0`` (what ComfyUI's CONST sampling turns back into ``x0``); sigma from
    the model's own (shifted) schedule at a uniform timestep, so training sees the noise levels the sampler visits."""
    latent_path = CACHE / f"latents-{N_SCENES}.safetensors"
    if not latent_path.exists():
        encode_latents(device)
    data = load_file(str(latent_path))["latents"]
    torch.manual_seed(seed)
    config = models.DIT_CONFIG
    model = models.build_dit(config)
    dit, ema = _start(model, seed, _zero_init_dit, resume, device)
    ms = model.model_sampling
    opt, sched = _optimizer(dit, 5e-4, steps)
    g = torch.Generator().manual_seed(seed + 7)
    context = models.empty_context(32).to(device)
    bar = tqdm(range(steps), desc="DiT", mininterval=5)
    final = out or models.WEIGHTS_DIR / models.DIT_FILE
    started = time.time()
    with _out_of_place_iadd():
        for step in bar:
            x0 = _batch(data, g)
            u = (torch.randint(1000, (32,), generator=g).float() + torch.rand(32, generator=g)) / 1000
            sigma = ms.sigma(u.clamp(1e-4, 1.0)).float()
            eps = torch.randn(x0.shape, generator=g)
            s4 = sigma[:, None, None, None]
            xt = (1 - s4) * x0 + s4 * eps
            pred = dit(xt.to(device), sigma.to(device), context=context, y=None, guidance=None)
            loss = (pred - (eps - x0).to(device)).pow(2).mean()
            _optimise(loss, dit, opt, sched, ema, step, bar)
            if (step + 1) % 500 == 0 or step + 1 == steps:
                target = final if step + 1 == steps else CACHE / f"dit-step{step + 1}.safetensors"
                meta = {"megapixel_lab": "lab DiT (ComfyUI Flux), EMA weights", "steps": str(step + 1),
                        "seed": str(seed), "train_seconds": f"{time.time() - started:.0f}"}
                _save(models.build_dit, models.save_dit, config, ema, target, meta)
                _save(models.build_dit, models.save_dit, config, dit.state_dict(),
                      CACHE / f"dit-step{step + 1}-raw.safetensors",
                      dict(meta, megapixel_lab="lab DiT, raw weights (not EMA)"))
    return final


STEPS = {"vae": 1000, "unet": 1500, "weak": 400, "dit": 3400}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["all", "vae", "latents", "unet", "weak", "dit"])
    parser.add_argument("--steps", type=int, default=None, help="override the step count of the stage")
    parser.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="U-Net stages: write the weights here instead")
    parser.add_argument("--resume", type=Path, default=None, help="U-Net stages: start from these weights")
    parser.add_argument("--seed", type=int, default=0, help="U-Net stages: the seed of the run (default 0)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    todo = ["vae", "latents", "unet", "weak"] if args.what == "all" else [args.what]
    for what in todo:
        if what == "vae":
            print(train_vae(args.steps or STEPS["vae"], args.device))
        elif what == "latents":
            print(encode_latents(args.device))
        elif what == "dit":
            print(train_dit(args.steps or STEPS["dit"], args.device, out=args.out, resume=args.resume,
                            seed=args.seed))
        else:
            print(train_unet("main" if what == "unet" else "weak", args.steps or STEPS[what], args.device,
                             out=args.out, resume=args.resume, seed=args.seed))
        print(f"[{what} done at {time.time() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
