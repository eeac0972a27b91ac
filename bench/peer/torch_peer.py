#!/usr/bin/env python3
"""A PyTorch speed peer for the TypeScript benches: kernels, training steps and classification of the GFZ and DFZ
classifiers (src/models/factorisations.ts, layers.ts; the same networks as bench/peer/tfjs-models.ts), plus a
log-weight equivalence check against one of our checkpoints.

    python3 bench/peer/torch_peer.py kernels|train|logweights  < request.json  > response.json

Reads one JSON object from stdin and writes one JSON object to stdout; logging goes to stderr. A failing case
is reported as {"error": "..."} in its slot and the rest go on; anything else exits 1 with a message on stderr.
Needs only torch and numpy. Runs on CUDA if available, else on the CPU, in strict float32 (TF32 off, like the
WebGPU engine).

Models use PyTorch layouts, which are ours: Linear [out, in], Conv2d [out, in, kh, kw], ConvTranspose2d
[in, out, kh, kw], NCHW maps flattened channel-major. Parameter names and their declaration order are ours too
(encoder.conv.0.weight, ..., p_x_yz.deconv.2.weight), so our safetensors checkpoints load by name as they are.
"""
import json
import math
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
CUDA = torch.cuda.is_available()
DEVICE = torch.device('cuda' if CUDA else 'cpu')

# Strict float32 matmuls and convs (no TF32), as the WebGPU engine computes. torch >= 2.9 has fp32_precision
# settings and deprecates the allow_tf32 flags, so the new settings are used where they exist.
try:
    torch.backends.cuda.matmul.fp32_precision = 'ieee'
    torch.backends.cudnn.conv.fp32_precision = 'ieee'
except (AttributeError, AssertionError, RuntimeError):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True


def log(msg):
    print(f'torch_peer: {msg}', file=sys.stderr, flush=True)


def header():
    return {'torch_version': torch.__version__, 'device': torch.cuda.get_device_name() if CUDA else 'cpu', 'cuda': torch.version.cuda, 'tf32': False}


def sync():
    if CUDA:
        torch.cuda.synchronize()


def time_reps(run, reps, warmup, budget_s):
    """Runs `run` once untimed (the caller's checks, cudnn autotuning), then `warmup` more untimed, then timed
    reps, each synchronised, until `reps` are done or `budget_s` of timed time is spent (at least one)."""
    run()
    sync()
    for _ in range(warmup):
        run()
        sync()
    times = []
    while not times or (len(times) < reps and sum(times) < budget_s):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    return {'ms': statistics.median(times) * 1e3, 'min_ms': min(times) * 1e3, 'reps': len(times)}


def run_cases(cases, fn):
    """fn(case) per case; a failure becomes {"error"} in that case's slot."""
    results = []
    for i, case in enumerate(cases):
        try:
            results.append(fn(case))
        except Exception as e:  # any failure is reported in the case's slot
            log(f'case {i} ({json.dumps(case)[:200]}): {type(e).__name__}: {e}')
            results.append({'error': f'{type(e).__name__}: {e}'})
        if CUDA:
            torch.cuda.empty_cache()
    return results


def check_shape(what, got, want):
    if list(got) != list(want):
        raise ValueError(f'{what}: output shape {list(got)}, expected {list(want)}')


# ---------------------------------------------------------------- mode kernels


def uniform_tensor(shape, seed):
    """Uniform in [-1, 1), drawn on the host from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1).to(DEVICE)


def kernel_case(case, reps, warmup, budget_s):
    op, pas = case['op'], case['pass']
    if pas not in ('forward', 'input_grad', 'filter_grad'):
        raise ValueError(f'unknown pass {pas!r}')
    if op == 'matmul':
        m, k, n = (case['mat'][d] for d in ('m', 'k', 'n'))
        a, b, g = uniform_tensor([m, k], 1), uniform_tensor([k, n], 2), uniform_tensor([m, n], 3)
        # The gradients of A @ B as the matmuls they are (as the TS bench's tfjs runner does).
        run, want = {'forward': (lambda: a @ b, [m, n]), 'input_grad': (lambda: g @ b.t(), [m, k]), 'filter_grad': (lambda: a.t() @ g, [k, n])}[pas]
    elif op in ('conv2d', 'conv_transpose2d'):
        c = case['conv']
        x = uniform_tensor([c['n'], c['cin'], c['hin'], c['hin']], 1)
        if op == 'conv2d':
            w = uniform_tensor([c['cout'], c['cin'], c['k'], c['k']], 2)
            fwd = lambda: F.conv2d(x, w, stride=c['stride'], padding=c['pad'])
        else:
            w = uniform_tensor([c['cin'], c['cout'], c['k'], c['k']], 2)
            fwd = lambda: F.conv_transpose2d(x, w, stride=c['stride'], padding=c['pad'], output_padding=c['outPad'])
        y_shape = [c['n'], c['cout'], c['hout'], c['hout']]
        if pas == 'forward':
            run, want = fwd, y_shape
        else:
            # Record the forward once, then time only the backward (cudnn's backward-data / backward-filter),
            # tracking just the one tensor whose gradient is asked for, as the TS bench does for ours.
            wrt = x if pas == 'input_grad' else w
            wrt.requires_grad_(True)
            y = fwd()
            check_shape(f'{op} forward', y.shape, y_shape)
            dy = uniform_tensor(y_shape, 3)
            run, want = (lambda: torch.autograd.grad(y, wrt, dy, retain_graph=True)[0]), list(wrt.shape)
    else:
        raise ValueError(f'unknown op {op!r}')
    checked = False

    def checked_run():
        nonlocal checked
        out = run()
        if not checked:
            check_shape(f'{op} {pas}', out.shape, want)
            checked = True

    return time_reps(checked_run, reps, warmup, budget_s)


def mode_kernels(req):
    reps, warmup, budget_s = req.get('reps', 10), req.get('warmup', 1), req.get('budget_s', 2)
    return {'results': run_cases(req['cases'], lambda c: kernel_case(c, reps, warmup, budget_s))}


# ---------------------------------------------------------------- models (src/models/layers.ts, factorisations.ts)

PRESETS = {'paper': {'channels': 64, 'hidden': 500, 'latent': 64}, 'compact': {'channels': 16, 'hidden': 128, 'latent': 32}}


class Mlp(nn.ModuleList):
    """sizes [in, h1, ..., out]: ReLU between layers, `last` on the output. Parameters <name>.<i>.weight/bias."""

    def __init__(self, sizes, last=None):
        super().__init__(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.last = last

    def forward(self, h):
        for i, layer in enumerate(self):
            h = layer(h)
            if i < len(self) - 1:
                h = F.relu(h)
            elif self.last is not None:
                h = self.last(h)
        return h


class ConvFeatures(nn.Module):
    """3 x [conv 5x5, C channels, stride 2, padding 2, ReLU] (28 -> 14 -> 7 -> 4), flatten, dense H + ReLU; and the
    network's head MLP, declared after them (ours declares `<name>.head` right after `<name>.conv`, `<name>.fc`)."""

    def __init__(self, channels, hidden, head_sizes):
        super().__init__()
        self.conv = nn.ModuleList(nn.Conv2d(1 if i == 0 else channels, channels, 5, stride=2, padding=2) for i in range(3))
        self.fc = nn.Linear(channels * 16, hidden)
        self.head = Mlp(head_sizes)

    def forward(self, x):
        for conv in self.conv:
            x = F.relu(conv(x))
        return F.relu(self.fc(x.flatten(1)))


class ImageDecoder(nn.Module):
    """Dense H + ReLU, dense 16C + ReLU, reshape C x 4 x 4, transposed convs 5x5 stride 2 padding 2 (4 -> 7 -> 14
    -> 28; channels C, C, 1; output padding 0, 1, 1; no bias) with ReLU, ReLU, sigmoid: the mean image [N, 784]."""

    def __init__(self, in_dim, channels, hidden):
        super().__init__()
        self.channels = channels
        self.fc = Mlp([in_dim, hidden, channels * 16], last=F.relu)
        self.deconv = nn.ModuleList(
            nn.ConvTranspose2d(channels, out, 5, stride=2, padding=2, output_padding=op, bias=False) for out, op in ((channels, 0), (channels, 1), (1, 1))
        )

    def forward(self, h):
        n = h.shape[0]
        h = self.fc(h).view(n, self.channels, 4, 4)
        for i, deconv in enumerate(self.deconv):
            h = deconv(h)
            h = torch.sigmoid(h) if i == 2 else F.relu(h)
        return h.reshape(n, 784)


def init_parameters(model):
    """Our initialisers, in declaration order after torch.manual_seed: Glorot uniform dense weights, Glorot normal
    truncated at 2 std conv filters, uniform(+-1 / (25 * out channels)) deconv filters, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            nn.init.uniform_(m.weight, -bound, bound)
        elif isinstance(m, nn.ConvTranspose2d):
            bound = 1 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)
            nn.init.uniform_(m.weight, -bound, bound)
        elif isinstance(m, nn.Conv2d):
            area = m.kernel_size[0] * m.kernel_size[1]
            std = math.sqrt(2 / (area * (m.in_channels + m.out_channels)))
            nn.init.trunc_normal_(m.weight, 0, std, -2 * std, 2 * std)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def log_gaussian(z, mu, log_sig):
    """log N(z; mu, exp(log_sig)^2), constants included, summed over the last axis."""
    return -(log_sig + HALF_LOG_2PI + 0.5 * ((z - mu) * torch.exp(-log_sig)).square()).sum(-1)


def log_standard_normal(z):
    return -(0.5 * z.square() + HALF_LOG_2PI).sum(-1)


def log_categorical(y_one_hot, logits):
    return (y_one_hot * F.log_softmax(logits, -1)).sum(-1)


def log_image_likelihood(x, mean):
    """Our default 'gaussian' likelihood, -sum (x - mu)^2, of images x [N, 784] against means [R*N, 784] (x
    broadcast over the R draws): [R*N]."""
    n, d = x.shape
    return -(mean.view(-1, n, d) - x).square().sum(-1).reshape(-1)


def tile_rows(t, r):
    """Row r*N + n = input row n."""
    return t if r == 1 else t.repeat(r, 1)


class Classifier(nn.Module):
    """GFZ p(z) p(y|z) p(x|y,z) or DFZ p(z) p(x|z) p(y|x,z), with the shared posterior q(z|x,y)."""

    def __init__(self, model, channels, hidden, latent):
        super().__init__()
        if model not in ('gfz', 'dfz'):
            raise ValueError(f"unknown model {model!r}: expected 'gfz' or 'dfz'")
        C, H, Z = channels, hidden, latent
        self.model, self.latent = model, latent
        # q(z|x,y): conv features of x, concat one-hot y, dense H + ReLU, dense 2Z -> (mu, log sigma).
        self.encoder = ConvFeatures(C, H, [H + NUM_CLASSES, H, 2 * Z])
        if model == 'gfz':
            self.p_y_z = Mlp([Z, H, NUM_CLASSES])
            self.p_x_yz = ImageDecoder(Z + NUM_CLASSES, C, H)
        else:
            self.p_x_z = ImageDecoder(Z, C, H)
            self.p_y_xz = ConvFeatures(C, H, [H + Z, H, NUM_CLASSES])

    def log_weights(self, x, y, noise=None):
        """log p(x, y, z) - log q(z|x, y) for R = y.shape[0] / N label rows per image, z ~ q(z|x, y)
        reparameterised. x [N, 1, 28, 28]; y one-hot [R*N, 10], rows r*N + n; noise standard normals [R*N, Z]."""
        n = x.shape[0]
        r = y.shape[0] // n
        mu, log_sig = self.encoder.head(torch.cat([tile_rows(self.encoder(x), r), y], 1)).chunk(2, 1)
        eps = torch.randn_like(mu) if noise is None else noise
        z = mu + torch.exp(log_sig) * eps
        xf = x.reshape(n, 784)
        log_p = log_standard_normal(z)
        if self.model == 'gfz':
            log_p = log_p + log_categorical(y, self.p_y_z(z)) + log_image_likelihood(xf, self.p_x_yz(torch.cat([z, y], 1)))
        else:
            features = tile_rows(self.p_y_xz(x), r)
            log_p = log_p + log_image_likelihood(xf, self.p_x_z(z)) + log_categorical(y, self.p_y_xz.head(torch.cat([features, z], 1)))
        return log_p - log_gaussian(z, mu, log_sig)

    def logits(self, x, samples, rows_per_pass):
        """Bayes' rule logits [N, 10]: logsumexp_k [log p(x, c, z_k) - log q(z_k|x, c)] - log K, rows (class,
        sample, image); the K draws of an image are shared by the ten classes; classes are chunked so that a
        pass holds at most rows_per_pass rows (at least one class)."""
        n, k = x.shape[0], samples
        per_class = k * n
        classes_per_pass = max(1, min(NUM_CLASSES, rows_per_pass // per_class))
        noise = torch.randn(k * n, self.latent, device=x.device)
        out = []
        for c0 in range(0, NUM_CLASSES, classes_per_pass):
            classes = min(classes_per_pass, NUM_CLASSES - c0)
            labels = torch.arange(c0, c0 + classes, device=x.device).repeat_interleave(per_class)
            y = F.one_hot(labels, NUM_CLASSES).float()
            w = self.log_weights(x, y, noise.repeat(classes, 1)).view(classes, k, n)
            out.append(torch.logsumexp(w, 1))
        return (torch.cat(out) - math.log(k)).t()


def create_model(model, channels, hidden, latent, seed=1):
    torch.manual_seed(seed)
    m = Classifier(model, channels, hidden, latent)
    init_parameters(m)
    return m.to(DEVICE)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- mode train


def model_dims(case):
    dims = dict(PRESETS[case['preset']]) if case.get('preset') in PRESETS else {}
    dims.update({k: case[k] for k in ('channels', 'hidden', 'latent') if k in case})
    return dims['channels'], dims['hidden'], dims['latent']


def train_case(case, batch, samples, budget_s, hosts):
    model = create_model(case['model'], *model_dims(case))
    reps, warmup = case.get('reps', 10), case.get('warmup', 1)
    result = {}
    if case['task'] == 'train':
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = 0

        def run():
            nonlocal step
            xs, ys = hosts[step % len(hosts)]
            x = torch.from_numpy(xs).to(DEVICE)
            y = F.one_hot(torch.from_numpy(ys).to(DEVICE), NUM_CLASSES).float()
            loss = -model.log_weights(x, y).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            v = loss.item()  # the host read synchronises
            if not math.isfinite(v):
                raise FloatingPointError(f'loss is {v} at step {step}')
            result.setdefault('first_loss', v)
            step += 1

    elif case['task'] == 'classify':
        x = torch.from_numpy(hosts[0][0]).to(DEVICE)  # uploaded once, as the TS bench does
        rows_per_pass = case.get('rows_per_pass') or NUM_CLASSES * samples * batch

        def run():
            with torch.no_grad():
                v = model.logits(x, samples, rows_per_pass).cpu()
            if not math.isfinite(v[0, 0].item()):
                raise FloatingPointError(f'logits[0] is {v[0, 0].item()}')

    else:
        raise ValueError(f"unknown task {case['task']!r}")
    timing = time_reps(run, reps, warmup, budget_s)
    return {**timing, 'params': num_params(model), **result}


def mode_train(req):
    batch, samples, budget_s = req.get('batch', 100), req.get('samples', 10), req.get('budget_s', 120)
    rng = np.random.default_rng(1)
    # Two host batches of random images in [0, 1) and random labels, alternated by the training steps.
    hosts = [(rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, NUM_CLASSES, batch)) for _ in range(2)]
    return {'results': run_cases(req['cases'], lambda c: train_case(c, batch, samples, budget_s, hosts))}


# ---------------------------------------------------------------- mode logweights


def read_safetensors(path):
    """{name: float32 tensor} of a safetensors file (F32 entries only; format: u64 LE header length, JSON header
    {name: {dtype, shape, data_offsets [begin, end] into the data after the header}}, raw little-endian data)."""
    with open(path, 'rb') as f:
        (length,) = struct.unpack('<Q', f.read(8))
        head = json.loads(f.read(length))
        data = f.read()
    out = {}
    for name, e in head.items():
        if name == '__metadata__':
            continue
        if e['dtype'] != 'F32':
            raise ValueError(f"{path}: {name} is {e['dtype']}, expected F32")
        b, end = e['data_offsets']
        out[name] = torch.from_numpy(np.frombuffer(data, dtype='<f4', count=(end - b) // 4, offset=b).copy()).view(e['shape'])
    return out


def load_weights(model, path):
    """Our checkpoint into the model by name, every name and shape checked (as src/models/store.ts loadModel)."""
    state = read_safetensors(path)
    params = dict(model.named_parameters())
    problems = [f'{name} missing' for name in params if name not in state]
    problems += [f'{name} unexpected' for name in state if name not in params]
    problems += [f'{name} is {list(t.shape)}, expected {list(params[name].shape)}' for name, t in state.items() if name in params and t.shape != params[name].shape]
    if problems:
        raise ValueError(f'{path}: ' + '; '.join(problems))
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def mode_logweights(req):
    model = create_model(req['model'], req['channels'], req['hidden'], req['latent'])
    load_weights(model, req['weights'])
    n = req['n']
    x = torch.tensor(req['x'], dtype=torch.float32, device=DEVICE).view(n, 1, 28, 28).requires_grad_(True)
    y = F.one_hot(torch.tensor(req['labels'], device=DEVICE), NUM_CLASSES).float()
    noise = torch.tensor(req['noise'], dtype=torch.float32, device=DEVICE).view(y.shape[0], req['latent'])
    lw = model.log_weights(x, y, noise)
    (grad,) = torch.autograd.grad(lw.sum(), x)
    return {'log_weights': lw.detach().cpu().tolist(), 'input_grad': grad.flatten().cpu().tolist()}


# ---------------------------------------------------------------- main


def json_safe(v):
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


MODES = {'kernels': mode_kernels, 'train': mode_train, 'logweights': mode_logweights}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(MODES)}  < request.json > response.json")
    try:
        req = json.load(sys.stdin)
        log(f'{sys.argv[1]} on {header()["device"]} (torch {torch.__version__})')
        out = {**header(), **MODES[sys.argv[1]](req)}
        json.dump(json_safe(out), sys.stdout, allow_nan=False)
        sys.stdout.write('\n')
    except Exception as e:
        sys.exit(f'torch_peer {sys.argv[1]}: {type(e).__name__}: {e}')


if __name__ == '__main__':
    main()
