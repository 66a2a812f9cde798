# ruff: noqa: E402, F403, F405, E741  (a study script: path setup before imports, shared helpers by *)
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # outputs beside the script
"""Each fused op of the three steps in isolation at the step's shapes/dtypes, sslfast (auto = native)
vs reference backend, fwd and fwd+bwd. 1 thread, thread clock, interleaved; each sample = CALLS calls."""
import sys
import json

sys.path.insert(0, HERE)
from common import *
import torch.nn.functional as F

CALLS, ROUNDS = 50, 31
g = torch.Generator().manual_seed(0)


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).requires_grad_(True)


def cases():
    # CLIP: normalized [256,128] embeddings, exp'd logit scale (0-d)
    img, txt, ls = leaf(256, 128), leaf(256, 128), torch.tensor(2.659).requires_grad_(True)

    def clip():
        return sslfast.clip_loss(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), ls.exp())

    def clip_bare():  # only the op: pre-normalized detached inputs made leaves
        return sslfast.clip_loss(imn, txn, scl)

    imn = F.normalize(img.detach(), dim=-1).requires_grad_(True)
    txn = F.normalize(txt.detach(), dim=-1).requires_grad_(True)
    scl = torch.tensor(14.28).requires_grad_(True)
    yield "clip_loss [256,128]", clip_bare, [imn, txn, scl]
    yield "clip_loss+normalize+exp [256,128]", clip, [img, txt, ls]
    # MAE random_masking: tokens [64,50,128], pos_embed [1,50,128], ratio .75, prefix 1
    tok = leaf(64, 50, 128)
    pe = torch.randn(1, 50, 128, generator=g)
    gen = torch.Generator().manual_seed(1)

    def rm():
        v, m, ids = sslfast.random_masking(tok, 0.75, pos_embed=pe, num_prefix_tokens=1, generator=gen)
        return v.square().mean() + m.sum() * 0

    yield "random_masking [64,50,128] keep 12", rm, [tok]
    # MAE unshuffle: latent [64,13,64] -> [64,50,64]
    xv = leaf(64, 13, 64)
    mt = leaf(1, 1, 64, scale=0.02)
    dpe = torch.randn(1, 50, 64, generator=g)
    ids = torch.stack([torch.randperm(49, generator=g) for _ in range(64)])

    def us():
        return sslfast.unshuffle(xv, ids, mt, pos_embed=dpe, num_prefix_tokens=1).square().mean()

    yield "unshuffle [64,13,64]->[64,50,64]", us, [xv, mt]
    # MAE masked_patch_loss: pred [64,49,16], imgs [64,1,28,28], mask [64,49] float, norm_pix l2
    pred = leaf(64, 49, 16)
    imgs = torch.rand(64, 1, 28, 28, generator=g)
    mask = (torch.rand(64, 49, generator=g) < 0.75).float()
    yield (
        "masked_patch_loss MAE [64,49,16] norm_pix l2",
        lambda: sslfast.masked_patch_loss(pred, imgs, mask, 4, norm_pix=True),
        [pred],
    )
    # SimMIM masked_patch_loss: pred [32,49,16], imgs [32,1,28,28], simmim mask (its dtype), no norm, l2
    pred2 = leaf(32, 49, 16)
    imgs2 = torch.rand(32, 1, 28, 28, generator=g)
    m2 = sslfast.simmim_mask(32, 28, 4, 4, 0.6, generator=g).flatten(1)
    print("simmim mask dtype", m2.dtype, tuple(m2.shape))
    yield (
        "masked_patch_loss SimMIM [32,49,16] raw l2",
        lambda: sslfast.masked_patch_loss(pred2, imgs2, m2, 4, norm_pix=False, loss="l2"),
        [pred2],
    )


def sample(fn, leaves, backend, bwd):
    with sslfast.use_backend(backend):
        t0 = time.thread_time()
        for _ in range(CALLS):
            out = fn()
            if bwd:
                out.backward()
                for l in leaves:
                    l.grad = None
        return (time.thread_time() - t0) * 1e3 / CALLS


res = {}
for label, fn, leaves in cases():
    for bwd in (False, True):
        for b in ("auto", "reference"):
            sample(fn, leaves, b, bwd)
        xs = {"auto": [], "reference": []}
        for r in range(ROUNDS):
            for b in ("auto", "reference") if r % 2 == 0 else ("reference", "auto"):
                xs[b].append(sample(fn, leaves, b, bwd))
        s, rf = med(xs["auto"]), med(xs["reference"])
        key = f"{label} {'fwd+bwd' if bwd else 'fwd'}"
        res[key] = dict(sslfast_ms=s, reference_ms=rf, diff_ms=s - rf, ratio_ref_over_ss=rf / s)
        print(
            f"{key:58s} sslfast {s:8.4f} ms  reference {rf:8.4f} ms  diff {s - rf:+8.4f}  ref/ss {rf / s:5.2f}",
            flush=True,
        )
json.dump(res, open(HERE + "/isolate_ops.json", "w"), indent=1)
