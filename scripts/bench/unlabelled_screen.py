"""Screens unlabelled objectives for issue 27 in PyTorch before they are built into fc7's engine.

A replica of `--preset quick` (conv 32/64/96/96/64 with LRN and overlapping pooling on 63x63
crops of Fashion-MNIST upscaled to 72, fc6/fc7 4096, He init, SGD 0.01 with momentum 0.9 and
decay 5e-4, the last epoch at a tenth) trained on the first 8,000 training images, then Figure
4's precision@6 of class with fc7 neighbours: 2,000 test images against the 60,000 training
images (this replica: raw pixels 0.817, untrained network 0.738; fc7's own eval: 0.8044 and
0.749). Objectives (--mode):
  instance   two views of each image, centred and normalised head outputs, tau 0.2, the other
             view positive, the step's views and 256 memory-bank rows negative (fc7's
             --self-supervised); --nn K adds each image's K nearest bank rows as positives (AND,
             Huang et al. 2019), --head 0 scores fc7 itself, --mlp W a 2-layer head with BN;
             --pixnn K --pixpair P: the second view, with probability P, from one of the
             image's K nearest images in raw pixels (--pixnn alone: their bank rows positives)
  rot        which of four rotations was applied (RotNet, Gidaris et al. 2018)
  cluster    k-means of PCA-whitened fc7 into --k clusters each epoch as labels (DeepCluster,
             Caron et al. 2018)
  supervised the labels themselves (the ceiling on these 8,000 images)
  recon      the image itself, 28x28 and unaugmented, from one view of it through a linear decoder
             on fc7 (a denoising autoencoder towards the canonical image); --recon W with
             --mode instance adds W times this loss to instance discrimination
--bn puts batch normalisation after every convolution and fc6/fc7 in place of LRN (foldable
into the weights at export; screened 2026-12-04: 0.732 at 6 epochs, no better than without).
Usage: python3 scripts/bench/unlabelled_screen.py --mode instance --epochs 4 [...]
(~45 s an epoch of 16,000 views on 2 cores, ~40 s a Figure 4; needs torch and numpy.)
"""
import argparse, gzip, math, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

torch.set_num_threads(2); torch.manual_seed(0); np.random.seed(0)
D = '/usr/share/datasets/fashion-mnist/'
def idx(f, off): return np.frombuffer(gzip.open(D + f).read(), np.uint8, offset=off)
Xtr = idx('train-images-idx3-ubyte.gz', 16).reshape(-1, 28, 28); Ytr = idx('train-labels-idx1-ubyte.gz', 8)
Xte = idx('t10k-images-idx3-ubyte.gz', 16).reshape(-1, 28, 28)[:2000]; Yte = idx('t10k-labels-idx1-ubyte.gz', 8)[:2000]

def up(x):  # [N, 28, 28] u8 -> [N, 1, 72, 72] in [-1, 1]
    t = torch.from_numpy(x.copy()).float().unsqueeze(1) / 127.5 - 1
    return F.interpolate(t, size=72, mode='bilinear', align_corners=False)

class Net(nn.Module):
    def __init__(s, out, bn=False):
        super().__init__()
        lrn = lambda: nn.LocalResponseNorm(5, 5e-4, 0.75, 2)
        # --bn: batch normalisation after every convolution and fc6/fc7 (foldable into their
        # weights at export), in place of LRN
        n2 = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        n1 = (lambda c: nn.BatchNorm1d(c)) if bn else (lambda c: nn.Identity())
        l = (lambda: nn.Identity()) if bn else lrn
        s.c = nn.Sequential(nn.Conv2d(1, 32, 11, 4, 2), n2(32), nn.ReLU(), l(), nn.MaxPool2d(3, 2),
                            nn.Conv2d(32, 64, 5, 1, 2, groups=2), n2(64), nn.ReLU(), l(), nn.MaxPool2d(3, 2),
                            nn.Conv2d(64, 96, 3, 1, 1), n2(96), nn.ReLU(), nn.Conv2d(96, 96, 3, 1, 1, groups=2), n2(96), nn.ReLU(),
                            nn.Conv2d(96, 64, 3, 1, 1, groups=2), n2(64), nn.ReLU(), nn.MaxPool2d(3, 2))
        s.f6, s.f7 = nn.Linear(64, 4096), nn.Linear(4096, 4096)
        s.n6, s.n7 = n1(4096), n1(4096)
        s.h = nn.Linear(4096, out) if out else None
        for m in s.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity='relu'); nn.init.zeros_(m.bias)
    def fc7(s, x): return F.relu(s.n7(s.f7(F.relu(s.n6(s.f6(s.c(x).flatten(1)))))))
    def forward(s, x):
        h = s.fc7(x)
        return s.h(h) if s.h is not None else h

def fc7_of(net, X, prepare=up):  # centre 63x63 crops; X u8 images, or upscaled with prepare=None
    prepare = prepare or (lambda x: x)
    with torch.no_grad():
        return torch.cat([net.fc7(prepare(X[i:i + 500])[:, :, 4:67, 4:67]) for i in range(0, len(X), 500)])

def precision6(ftr, fte):
    d = (fte * fte).sum(1, keepdim=True) - 2 * fte @ ftr.T + (ftr * ftr).sum(1)
    nb = d.topk(6, largest=False).indices
    ytr, yte = torch.from_numpy(Ytr.astype(np.int64)), torch.from_numpy(Yte.astype(np.int64))
    return (ytr[nb] == yte[:, None]).float().mean().item()

def figure4(net):
    net.eval(); p = precision6(fc7_of(net, Xtr), fc7_of(net, Xte)); net.train(); return p

def views(x, a):  # exemplar-style views: warp (shift, zoom, rotation, flip), contrast; optional
    # brightness (+-bright of the range), gamma in [1/gamma, gamma] and blur
    n = len(x); ang = (torch.rand(n) * 2 - 1) * a.rotate * math.pi / 180
    sc = torch.exp((torch.rand(n) * 2 - 1) * math.log(a.zoom)); fl = torch.where(torch.rand(n) < .5, -1., 1.)
    tx, ty = [(torch.rand(n) * 2 - 1) * a.translate * 2 * 63 / 72 for _ in range(2)]
    k, c, s = 63 / 72, torch.cos(ang), torch.sin(ang)
    th = torch.stack([torch.stack([c * fl * k / sc, -s * k / sc, tx], 1), torch.stack([s * fl * k / sc, c * k / sc, ty], 1)], 1)
    v = F.grid_sample(x, F.affine_grid(th, (n, 1, 63, 63), align_corners=False), padding_mode='border', align_corners=False)
    m = v.mean((1, 2, 3), keepdim=True)
    v = (v - m) * torch.exp((torch.rand(n, 1, 1, 1) * 2 - 1) * math.log(a.contrast)) + m
    v = v + (torch.rand(n, 1, 1, 1) * 2 - 1) * a.bright * 2
    if a.gamma > 1:
        g = torch.exp((torch.rand(n, 1, 1, 1) * 2 - 1) * math.log(a.gamma))
        v = ((v.clamp(-1, 1) + 1) / 2) ** g * 2 - 1
    if a.blur > 0:  # Gaussian blur, sigma up to --blur pixels, separable
        r = torch.arange(-4, 5).float()
        k = torch.exp(-r[None, :] ** 2 / (2 * (torch.rand(n) * a.blur).clamp(min=1e-3)[:, None] ** 2))
        k = k / k.sum(1, keepdim=True); v = v.transpose(0, 1)
        v = F.conv2d(F.pad(v, (4, 4, 0, 0), mode='replicate'), k[:, None, None, :], groups=n)
        v = F.conv2d(F.pad(v, (0, 0, 4, 4), mode='replicate'), k[:, None, :, None], groups=n).transpose(0, 1)
    return v

def instance_loss(net, U, idx, bank, nbrs, a):
    idx2 = idx
    if a.pixpair > 0:  # the second view from one of the image's pixel neighbours, with prob. pixpair
        alt = nbrs[idx, torch.randint(0, nbrs.shape[1], (len(idx),))]
        idx2 = torch.where(torch.rand(len(idx)) < a.pixpair, alt, idx); nbrs = None
    z = net(torch.cat([views(U[idx], a), views(U[idx2], a)]))
    v = F.normalize(z - z.mean(0, keepdim=True), dim=1); B = len(idx); own = torch.cat([idx, idx])
    neg = torch.randint(0, len(bank), (256,))
    s_b = v @ v.T / a.tau; s_b.fill_diagonal_(-1e9)
    s_m = (v @ bank[neg].T / a.tau).masked_fill(neg[None, :] == own[:, None], -1e9)
    logits = torch.cat([s_b, s_m], 1)
    pos = logits[torch.arange(2 * B), torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)])]
    if nbrs is not None:
        s_n = (v[:, None, :] * bank[nbrs[own]]).sum(-1) / a.tau
        logits, pos = torch.cat([logits, s_n], 1), torch.logsumexp(torch.cat([pos[:, None], s_n], 1), 1)
    with torch.no_grad():
        for j, o in enumerate(own.tolist()):
            bank[o] = F.normalize(0.5 * bank[o] + 0.5 * v[j], dim=0)
    return (torch.logsumexp(logits, 1) - pos).mean()

def recon_loss(net, U, idx, a, z=None):  # squared error per image, summed over its 784 pixels
    x = views(U[idx], a)
    if a.thumb:  # the engine's target: 16x16 area means of the 72x72 image, standardised per image
        t = F.adaptive_avg_pool2d(U[idx], 16).flatten(1)
        target = (t - t.mean(1, keepdim=True)) / t.std(1, unbiased=False, keepdim=True).clamp(min=0.04)
    else:
        target = torch.from_numpy(Xtr[idx.numpy()].reshape(len(idx), -1).astype(np.float32)) / 127.5 - 1
    return ((net.dec(net.fc7(x)) - target) ** 2).mean(1).mean() * a.rscale

def kmeans_labels(net, U, k):
    with torch.no_grad():
        f = fc7_of(net, U, prepare=None)
        f = f - f.mean(0); _, s, v = torch.pca_lowrank(f, q=64, center=False)
        p = F.normalize(f @ v / s, dim=1); c = p[torch.randperm(len(p))[:k]].clone()
        for _ in range(20):
            lab = (p @ c.T).argmax(1)
            for j in range(k):
                c[j] = p[lab == j].mean(0) if (lab == j).any() else p[torch.randint(0, len(p), (1,))][0]
            c = F.normalize(c, dim=1)
    return lab

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--mode', default='instance', choices=['instance', 'rot', 'cluster', 'supervised', 'recon'])
    ap.add_argument('--epochs', type=int, default=4); ap.add_argument('--lr', type=float, default=0.01)
    ap.add_argument('--tau', type=float, default=0.2); ap.add_argument('--head', type=int, default=128)
    ap.add_argument('--mlp', type=int, default=0); ap.add_argument('--nn', type=int, default=0)
    ap.add_argument('--k', type=int, default=100); ap.add_argument('--bn', action='store_true')
    ap.add_argument('--thumb', action='store_true'); ap.add_argument('--recon', type=float, default=0); ap.add_argument('--rscale', type=float, default=1)
    ap.add_argument('--pixnn', type=int, default=0); ap.add_argument('--pixpair', type=float, default=0)
    for f, d in [('translate', 0.1), ('zoom', 1.2), ('rotate', 10.0), ('contrast', 1.3), ('bright', 0.0), ('gamma', 1.0), ('blur', 0.0)]:
        ap.add_argument('--' + f, type=float, default=d)
    a = ap.parse_args(); print(a, flush=True)
    U = up(Xtr[:8000]); N = len(U); yl = torch.from_numpy(Ytr[:N].astype(np.int64))
    out = {'instance': a.head, 'rot': 4, 'cluster': a.k, 'supervised': 10, 'recon': 0}[a.mode]
    net = Net(out, a.bn)
    if a.mode == 'recon' or a.recon:
        net.dec = nn.Linear(4096, 256 if a.thumb else 784); nn.init.normal_(net.dec.weight, 0, 0.01); nn.init.zeros_(net.dec.bias)
    if a.mlp:
        net.h = nn.Sequential(nn.Linear(4096, a.mlp), nn.BatchNorm1d(a.mlp), nn.ReLU(), nn.Linear(a.mlp, a.head))
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    bank, nbrs = F.normalize(torch.randn(N, a.head or 4096), dim=1), None
    if a.pixnn:  # each image's K nearest in raw pixels (fixed) as extra positives
        P = torch.from_numpy(Xtr[:N].reshape(N, -1).astype(np.float32))
        d = (P * P).sum(1, keepdim=True) - 2 * P @ P.T + (P * P).sum(1); d.fill_diagonal_(1e18)
        nbrs = d.topk(a.pixnn, largest=False).indices
        print('pixel neighbours share the label', round((yl[nbrs] == yl[:, None]).float().mean().item(), 3), flush=True)
    print('untrained', round(figure4(net), 4), flush=True)
    for ep in range(a.epochs):
        t, tot, steps = time.time(), 0.0, 0
        if ep == a.epochs - 1:
            for g in opt.param_groups: g['lr'] = a.lr / 10
        perm, bs = torch.randperm(N), 32 if a.mode == 'instance' else 64
        if a.mode == 'cluster':
            lab = kmeans_labels(net, U, a.k); nn.init.normal_(net.h.weight, 0, 0.01); nn.init.zeros_(net.h.bias)
            perm = torch.multinomial((1.0 / torch.bincount(lab, minlength=a.k).float().clamp(min=1))[lab], N, True)
        for i in range(0, N - bs + 1, bs):
            idx = perm[i:i + bs]
            if a.mode == 'instance':
                loss = instance_loss(net, U, idx, bank, nbrs, a)
                if a.recon:
                    loss = loss + a.recon * recon_loss(net, U, idx, a)
            elif a.mode == 'recon':
                loss = recon_loss(net, U, idx, a)
            else:
                i0, j0 = np.random.randint(0, 10, 2); x = U[idx][:, :, i0:i0 + 63, j0:j0 + 63]
                x = torch.where(torch.rand(len(x), 1, 1, 1) < .5, x.flip(3), x)
                if a.mode == 'rot':
                    r = torch.arange(bs) % 4
                    x = torch.cat([torch.rot90(x[r == q], q, (2, 3)) for q in range(4)]); y = r.sort().values
                else:
                    y = yl[idx] if a.mode == 'supervised' else lab[idx]
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item(); steps += 1
        if a.mode == 'instance' and a.nn and not a.pixnn:
            with torch.no_grad():
                sim = bank @ bank.T; sim.fill_diagonal_(-2); nbrs = sim.topk(a.nn, dim=1).indices
        p = figure4(net) if ep % 2 == 1 or ep == a.epochs - 1 else float('nan')
        print(f'epoch {ep + 1} loss {tot / steps:.3f} figure4 precision@6 {p:.4f} ({time.time() - t:.0f} s)', flush=True)

if __name__ == '__main__':
    main()
