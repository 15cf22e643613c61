"""Training augmentation as batched tensor ops on the training device (as in airbench).

Both loaders call these, so FFCV and the device-held loader augment identically. Doing it here instead of in
FFCV's pipeline also makes it seedable: FFCV's flip and translate draw from numba's unseeded per-thread RNG, which
would make runs unrepeatable and resume inexact.
"""

import torch
import torch.nn.functional as F


def epoch_generator(seed: int, epoch: int, device) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch): a resumed run replays the same augmentations."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + epoch)
    return g


def draw_flip_crop(batch_size: int, padding: int, generator: torch.Generator):
    """The random draws of one batch's flip_crop: (flip, dy, dx). A resumed epoch draws them for the batches it
    skips, so the batches after the skip get the augmentations an uninterrupted epoch gives them."""
    dev = generator.device
    flip = torch.rand(batch_size, generator=generator, device=dev) < 0.5
    if padding == 0:
        return flip, None, None
    dy = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=dev)
    return flip, dy, dx


def flip_crop(images: torch.Tensor, padding: int, horizontal_flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (where the data set allows it), then a random crop of the zero-padded image
    (torchvision's RandomCrop(padding)).

    images: (B, C, H, W) in any dtype and layout. Every random draw comes from ``generator``; the flip is drawn even
    when not applied, so one seed gives the same crops with and without flipping.
    """
    B, C, H, W = images.shape
    dev = images.device
    flip, dy, dx = draw_flip_crop(B, padding, generator)
    if horizontal_flip:
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    if padding == 0:
        return images
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]
    batch = torch.arange(B, device=dev)[:, None, None, None]
    chan = torch.arange(C, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]
