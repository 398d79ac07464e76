#!/usr/bin/python3
"""The scaling model of scripts/scaling.sh: fit, check, predict, draw.

usage: scripts/scaling_model.py FIGURES PNG
       scripts/scaling_model.py --collectives FIGURES   (scripts/collectives-bench.sh's figures: the
       terms inside and between hosts with several ranks a host, checked against the measured
       sums; see flat_ring and hierarchical below and docs/scaling.md#hosts-with-several-ranks)

FIGURES holds what scaling.sh measured (one figure a line). The model is fitted from the
micro-measurements only -- the allreduce of 1 float and of a large buffer on 2 to 4 ranks of each
network, and each model's step on 1 rank at per-rank batches 16 to 128 -- and then predicts the
step time of every training configuration that was measured, which never enters the fit:

  T(N, b) = S * (C(b) + U + K) + A(N, n)
  C(b)                             forward, backward and data for a per-rank batch of b samples:
                                   linear between the batches measured on 1 rank (16..128)
  U                                the optimizer's update (every rank updates every parameter)
  K       = k * P                  the compression's own work on P parameters (0 in float32 and on
                                   1 rank), k for bf16 and for PowerSGD each from the MLP's step
                                   with it on 2 ranks of one host
  A(N, n) = m 2 (N - 1) alpha_N + 2 (N - 1) / N * n * beta_N + 2 ceil(log2 N) alpha_N
                                   m ring allreduces moving n bytes in all (m = 1; PowerSGD m = 2:
                                   the P's, then the Q's), and the per-step stop check (one int:
                                   latency only, recursive doubling as MPI does for small
                                   messages); 0 for N = 1
  S       = ceil(R / cores) * f    the busiest core's ranks (R ranks on this machine, hosts or not):
                                   the step waits for the slowest rank; f (R > 1 only): how much
                                   slower a rank computes while another computes beside it (memory
                                   and caches are shared), from two 1-rank runs at once
  on this machine's tbf-shaped links, minus the token bucket's burst: min(burst, rate x compute)
  bytes of each step's allreduce leave at the unshaped speed (bucket_saving)

with N ranks, global batch 128 (strong scaling: b = ceil(128 / N)) or 128 per rank (weak), n =
4 bytes x parameters (float32), 2 x parameters (bf16), or PowerSGD's bytes as dptrain printed them. alpha_N and beta_N come from the
N-rank allreduces of one float (all latency) and of the large buffer (the rest is bandwidth).
The default allreduce is fused after backward, so no overlap is subtracted. For nodes of a real
cluster S = 1 (a node per rank); alpha and beta come from the 2-rank figures of the tbf-shaped
links (1 and 10 Gbit/s; more ranks here share 2 cores and would not extrapolate), and 100 Gbit/s
takes the 10 Gbit/s link's measured efficiency ten times faster; the latency alpha is the one
measured between namespaces here unless SCALING_LATENCY_US gives a real network's.
"""
import math
import os
import re
import sys

COLORS = {"shm": "tab:green", "tcp": "tab:blue", "10gbit": "tab:orange", "1gbit": "tab:red"}
NET_NAMES = {"shm": "1 host (shared memory)", "tcp": "hosts, TCP full speed", "10gbit": "hosts, 10 Gbit/s",
             "1gbit": "hosts, 1 Gbit/s"}


def fail(message):
    print(f"scaling_model: error: {message}", file=sys.stderr)
    sys.exit(1)


def wire_of(compress):
    """none -> fp32, bf16, powersgd:R -> psgd (the figures are for one R, scaling.sh's)."""
    return "psgd" if compress.startswith("powersgd") else "fp32" if compress == "none" else compress


def figure_lines(path):
    """(number, line, fields) of every line of a figures file."""
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    return [(number, line, line.split()) for number, line in enumerate(lines, 1)]


def required(figures, path, keys):
    """The figures, once every one of their one-value lines is there."""
    for key in keys:
        if key not in figures:
            fail(f"{path}: no '{key}' line")
    return figures


def read(path):
    figures = {"allreduce": {}, "compute": {}, "measured": [], "params": {}, "psgd_bytes": {}, "contended": {}}
    for number, line, f in figure_lines(path):
        try:
            if f[0] in ("cores", "hosts"):
                figures[f[0]] = int(f[1])
            elif f[0] == "kernels":
                figures["kernels"] = f[1]
            elif f[0] == "shaping":
                figures.setdefault("shaping", {})[f[1]] = {"rate": float(f[2]) / 8, "burst": float(f[3])}
            elif f[0] == "contended":
                figures["contended"][(f[1], int(f[2]))] = float(f[3]) / 1e3
            elif f[0] == "allreduce":
                figures["allreduce"][(f[1], int(f[2]), int(f[3]))] = float(f[4])
            elif f[0] in ("compute", "measured"):
                row = {"model": f[1], "compress": wire_of(f[2]), "where": f[3], "net": f[4], "ranks": int(f[5]),
                       "batch": int(f[6]), "step": float(f[7]) / 1e3, "update": float(f[8]) / 1e3}
                figures["params"][f[1]] = int(f[9])
                if row["compress"] == "psgd" and len(f) > 10:  # PowerSGD's bytes per step, as dptrain said
                    figures["psgd_bytes"][f[1]] = int(f[10])
                if f[0] == "compute" and row["compress"] in ("bf16", "psgd"):
                    figures[row["compress"]] = row
                elif f[0] == "compute":
                    figures["compute"][(f[1], row["batch"])] = row
                else:
                    figures["measured"].append(row)
            else:
                raise ValueError(f[0])
        except (IndexError, ValueError):
            fail(f"{path}:{number}: not a scaling.sh figure: {line!r}")
    return required(figures, path, ("cores", "kernels", "hosts"))


def fit(figures):
    """The model's constants from the micro-measurements."""
    model = {"cores": figures["cores"], "compute": {}, "net": {}, "shaping": figures.get("shaping", {})}
    for name in ("mlp", "cnn"):
        rows = sorted((b, r) for (m, b), r in figures["compute"].items() if m == name)
        if len(rows) < 2:
            fail(f"the {name} needs 1-rank compute figures at two batches at least")
        model["compute"][name] = {"points": [(b, r["step"] - r["update"]) for b, r in rows],
                                  "update": sum(r["update"] for _, r in rows) / len(rows)}
    # f: a rank's step while another rank computes beside it, over its step alone (1 without figures)
    model["busy"] = {name: seconds / (compute(model, name, batch) + model["compute"][name]["update"])
                     for (name, batch), seconds in figures["contended"].items()}
    sizes = sorted({floats for (_, _, floats) in figures["allreduce"]})
    if len(sizes) != 2:
        fail("the allreduce figures need exactly two sizes (1 float and a large buffer)")
    small, large = sizes
    for (net, ranks, floats), seconds in sorted(figures["allreduce"].items()):
        if floats != small:
            continue
        large_seconds = figures["allreduce"].get((net, ranks, large))
        if large_seconds is None:
            fail(f"no {large}-float allreduce figure for {net} on {ranks} ranks")
        alpha = seconds / (2 * (ranks - 1))
        beta = max(large_seconds - seconds, 0.0) / (2 * (ranks - 1) / ranks * 4 * large)
        model["net"][(net, ranks)] = {"alpha": alpha, "beta": beta}
    for net in ("shm", "tcp", "10gbit", "1gbit"):
        if (net, 2) not in model["net"]:
            fail(f"no 2-rank allreduce figures for {net}")
    # bf16's own cost per parameter: what its 2-rank step on one host takes beyond the model's
    # float32 step with half the bytes (at least 0)
    model["bf16_cost"] = model["psgd_cost"] = 0.0
    model["psgd_bytes"] = figures["psgd_bytes"]
    for wire in ("bf16", "psgd"):
        if wire in figures and (wire == "bf16" or "mlp" in model["psgd_bytes"]):
            row = figures[wire]
            params = figures["params"]["mlp"]
            without = step_time(model, "mlp", params, 2, 64, model["net"][("shm", 2)], wire,
                                model["busy"].get("mlp", 1.0))
            model[f"{wire}_cost"] = max(row["step"] - without, 0.0) / params
    latency = os.environ.get("SCALING_LATENCY_US")
    ten = model["net"][("10gbit", 2)]
    efficiency = (8 / 10e9) / ten["beta"] if ten["beta"] > 0 else 1.0
    model["cluster"] = {
        "1 GbE": dict(model["net"][("1gbit", 2)]),
        "10 GbE": dict(ten),
        "100 GbE": {"alpha": ten["alpha"], "beta": 8 / 100e9 / efficiency},
    }
    if latency:
        for link in model["cluster"].values():
            link["alpha"] = float(latency) / 1e6
    return model


def compute(model, name, batch):
    """C(b): linear between the measured batches, beyond the largest along the last segment, below
    the smallest in proportion to it."""
    points = model["compute"][name]["points"]
    if batch <= points[0][0]:
        return points[0][1] * batch / points[0][0]
    for (b0, t0), (b1, t1) in zip(points, points[1:]):
        if batch <= b1:
            return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)
    (b0, t0), (b1, t1) = points[-2], points[-1]
    return t1 + (t1 - t0) * (batch - b1) / (b1 - b0)


def wire_bytes(model, name, params, compress):
    """Bytes of each rank's allreduces per step: float32, bfloat16, or PowerSGD's factors and the
    gradients it sends whole (as dptrain printed them)."""
    if compress == "psgd":
        if name not in model["psgd_bytes"]:
            fail(f"no PowerSGD byte count for the {name}")
        return model["psgd_bytes"][name]
    return params * (2 if compress == "bf16" else 4)


def allreduces(net, ranks, nbytes, count):
    """count allreduces that move nbytes between them: count latencies, the bytes once."""
    if ranks == 1:
        return 0.0
    return count * 2 * (ranks - 1) * net["alpha"] + 2 * (ranks - 1) / ranks * nbytes * net["beta"]


def latencies(compress):
    """m: the gradient's allreduces (PowerSGD: the P's and the Q's)."""
    return 2 if compress == "psgd" else 1


def stop_check(net, ranks):
    """The per-step allreduce of one int (any rank's stop signal): latency only, log2 N rounds."""
    return 0.0 if ranks == 1 else 2 * math.ceil(math.log2(ranks)) * net["alpha"]


def step_time(model, name, params, ranks, batch, net, compress, sharing):
    nbytes = wire_bytes(model, name, params, compress)
    own = model.get(f"{compress}_cost", 0.0) * params if compress in ("bf16", "psgd") and ranks > 1 else 0.0
    work = compute(model, name, batch) + model["compute"][name]["update"] + own
    return sharing * work + allreduces(net, ranks, nbytes, latencies(compress)) + stop_check(net, ranks)


def bucket_saving(model, row, params, gap):
    """tc tbf lets a burst through at the link's own speed: its token bucket refills while the
    ranks compute (gap seconds, up to the burst), and that many of each rank's bytes of the
    step's allreduce leave unshaped. The back-to-back allreduces that fit beta leave it no time
    to refill."""
    shaping = model["shaping"].get(row["net"])
    if not shaping or row["ranks"] == 1:
        return 0.0
    ranks = row["ranks"]
    sent = 2 * (ranks - 1) / ranks * wire_bytes(model, row["model"], params, row["compress"])
    fast = min(shaping["burst"], shaping["rate"] * gap, sent)
    full = model["net"][("tcp", max(ranks, 2))]["beta"]
    shaped = model["net"][(row["net"], max(ranks, 2))]["beta"]
    return fast * max(shaped - full, 0.0) * ranks / (2 * (ranks - 1))


def predicted_here(model, row, params):
    sharing = math.ceil(row["ranks"] / model["cores"])
    if row["ranks"] > 1:
        sharing *= model["busy"].get(row["model"], 1.0)
    batch = math.ceil(row["batch"] / row["ranks"])
    net = model["net"].get((row["net"], max(row["ranks"], 2)))
    if net is None:
        fail(f"no allreduce figures for {row['net']} on {row['ranks']} ranks")
    total = step_time(model, row["model"], params, row["ranks"], batch, net, row["compress"], sharing)
    nbytes = wire_bytes(model, row["model"], params, row["compress"])
    gap = total - allreduces(net, row["ranks"], nbytes, latencies(row["compress"])) - stop_check(net, row["ranks"])
    return total - bucket_saving(model, row, params, gap)


def efficiency(model, name, params, nodes, link, compress, weak):
    one = step_time(model, name, params, 1, 128, link, compress, 1)
    if weak:
        return one / step_time(model, name, params, nodes, 128, link, compress, 1)
    return one / (nodes * step_time(model, name, params, nodes, math.ceil(128 / nodes), link, compress, 1))


def report(figures, model):
    print(f"scaling model ({figures['cores']} cores; OpenBLAS kernels {figures['kernels']}; fitted from the "
          f"allreduce and 1-rank step figures only)")
    print("  T(N, b) = S (C(b) + U + K) + m 2 (N-1) alpha_N + 2 (N-1)/N n beta_N + 2 ceil(log2 N) alpha_N (m = 1, PowerSGD 2; the last term the stop check),  S = ceil(ranks on this machine / cores) f,"
          " K = k P with compression on N > 1;"
          " on tbf-shaped links minus min(burst, rate x compute) bytes at the unshaped speed")
    print(f"  bf16: k = {model['bf16_cost'] * 1e9:.2f} ns per parameter (rounding, error feedback, the user-defined sum)")
    if model["psgd_bytes"]:
        sizes = ", ".join(f"{name} {n / 1e3:.1f} KB" for name, n in sorted(model["psgd_bytes"].items()))
        print(f"  PowerSGD: k = {model['psgd_cost'] * 1e9:.2f} ns per parameter (the factors' products, "
              f"orthonormalisation, error feedback); n = {sizes}")
    for name, c in model["compute"].items():
        points = ", ".join(f"C({b}) = {t * 1e3:.3f}" for b, t in c["points"])
        print(f"  {name}: {points} ms; U = {c['update'] * 1e3:.3f} ms; n = {figures['params'][name] * 4 / 1e6:.2f} MB "
              f"(float32); f = {model['busy'].get(name, 1.0):.3f}")
    for (net, ranks), v in sorted(model["net"].items(), key=lambda item: (list(NET_NAMES).index(item[0][0]), item[0][1])):
        print(f"  {NET_NAMES[net]:25} N = {ranks}: alpha = {v['alpha'] * 1e6:7.1f} us, beta = {v['beta'] * 1e9:7.3f} "
              f"ns/byte ({1 / v['beta'] / 1e9 if v['beta'] > 0 else float('inf'):.2f} GB/s)")
    print()
    print(f"{'model':5} {'wire':5} {'ranks on':26} {'ranks':>5} {'measured ms':>12} {'predicted ms':>13} {'error':>7}")
    worst = worst_unshared = 0.0
    for row in figures["measured"]:
        params = figures["params"][row["model"]]
        predicted = predicted_here(model, row, params)
        error = 100 * (predicted - row["step"]) / row["step"]
        worst = max(worst, abs(error))
        if row["ranks"] <= model["cores"]:
            worst_unshared = max(worst_unshared, abs(error))
        where = NET_NAMES[row["net"]] if row["where"] == "hosts" or row["net"] == "shm" else row["net"]
        print(f"{row['model']:5} {row['compress']:5} {where:26} {row['ranks']:5d} "
              f"{row['step'] * 1e3:12.3f} {predicted * 1e3:13.3f} {error:+6.1f}%")
    print(f"(worst error where every rank has a core of its own: {worst_unshared:.1f}%)")
    print()
    nodes = [2, 4, 16, 64, 128, 256]
    print("predicted parallel efficiency on a cluster, one rank per node (strong: global batch 128; weak: 128 per rank)")
    print(f"{'model':5} {'link':8} {'wire':5} {'scaling':7} " + " ".join(f"{n:>6}" for n in nodes))
    for name in ("mlp", "cnn"):
        params = figures["params"][name]
        for link_name, link in model["cluster"].items():
            for compress in ("fp32", "bf16", "psgd"):
                if compress == "psgd" and name not in model["psgd_bytes"]:
                    continue
                for weak in (False, True):
                    values = [efficiency(model, name, params, n, link, compress, weak) if weak or n <= 128 else None
                              for n in nodes]
                    cells = " ".join(f"{100 * v:5.0f}%" if v is not None else f"{'-':>6}" for v in values)
                    print(f"{name:5} {link_name:8} {compress:5} "
                          f"{'weak' if weak else 'strong':7} {cells}")
    return worst


def draw(figures, model, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for row_index, name in enumerate(("mlp", "cnn")):
        params = figures["params"][name]
        here = axes[row_index][0]
        measured = [r for r in figures["measured"] if r["model"] == name and r["compress"] == "fp32"]
        for net in ("shm", "tcp", "10gbit", "1gbit"):
            points = sorted((r["ranks"], r["step"]) for r in measured if r["net"] == net)
            if not points:
                continue
            ranks = [p[0] for p in points]
            line = [predicted_here(model, {"model": name, "compress": "fp32", "net": net, "ranks": n, "batch": 128},
                                   params) * 1e3 for n in ranks]
            here.plot(ranks, line, "-x", color=COLORS[net], label=f"{NET_NAMES[net]}: predicted")
            here.plot([p[0] for p in points], [p[1] * 1e3 for p in points], "o", color=COLORS[net],
                      label=f"{NET_NAMES[net]}: measured")
        here.set_title(f"{name.upper()} on this machine ({figures['cores']} cores): step time, global batch 128")
        here.set_xlabel("ranks (one per host across hosts)")
        here.set_ylabel("ms per step")
        here.set_xticks(range(1, figures["hosts"] + 1))
        here.legend(fontsize=7)
        there = axes[row_index][1]
        nodes = [2 ** k for k in range(9)]
        for (link_name, link), style in zip(model["cluster"].items(), (":", "--", "-")):
            for compress, color in (("fp32", "tab:blue"), ("bf16", "tab:purple"), ("psgd", "tab:brown")):
                if compress == "psgd" and name not in model["psgd_bytes"]:
                    continue
                strong = [(n, efficiency(model, name, params, n, link, compress, False)) for n in nodes if n <= 128]
                weak = [(n, efficiency(model, name, params, n, link, compress, True)) for n in nodes]
                wire = compress
                there.plot([n for n, _ in weak], [n * e for n, e in weak], style, color=color,
                           label=f"weak, {link_name}, {wire}")
                there.plot([n for n, _ in strong], [n * e for n, e in strong], style, color=color, alpha=0.45,
                           label=f"strong, {link_name}, {wire}")
        there.plot(nodes, nodes, color="grey", linewidth=0.8, label="ideal")
        there.set_xscale("log", base=2)
        there.set_yscale("log", base=2)
        there.set_title(f"{name.upper()} predicted on a cluster: speed-up over 1 node (samples/s)")
        there.set_xlabel("nodes (one rank each)")
        there.set_ylabel("speed-up")
        there.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    temporary = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(temporary, dpi=110)
    os.replace(temporary, path)


COLLECTIVES = {"tuned": "tuned (default)", "tuned-ring": "tuned, ring", "han": "han", "han-1seg": "han, 1 segment"}


def read_collectives(path):
    """collectives-bench.sh's figures: 2-rank references, the sums and the training steps."""
    figures = {"ref": {}, "coll": {}, "step": {}}
    for number, line, f in figure_lines(path):
        try:
            value = None if f[-1] == "crash" or f[0] in ("kernels", "openmpi") else float(f[-1])
            if f[0] in ("cores", "hosts", "per_host"):
                figures[f[0]] = int(f[1])
            elif f[0] in ("kernels", "openmpi"):
                figures[f[0]] = " ".join(f[1:])
            elif f[0] == "ref" and value is not None:
                figures["ref"][(f[1], f[2], int(f[3]))] = value
            elif f[0] == "coll":
                figures["coll"][(f[1], f[2], f[3], int(f[4]))] = value
            elif f[0] == "step":
                figures["step"][(f[1], f[2], f[3])] = None if value is None else value / 1e3
            else:
                raise ValueError(f[0])
        except (IndexError, ValueError):
            fail(f"{path}:{number}: not a collectives-bench.sh figure: {line!r}")
    return required(figures, path, ("cores", "hosts", "per_host"))


def two_rank_link(figures, link, where):
    """alpha and beta of one link from its 2-rank sums (1 float: latency; the large one: the rest)."""
    sizes = sorted(n for (l, w, n) in figures["ref"] if l == link and w == where)
    if len(sizes) != 2:
        fail(f"no 2-rank reference sums for {where} at {link}")
    small, large = (figures["ref"][(link, where, n)] for n in sizes)
    return {"alpha": small / 2, "beta": max(large - small, 0.0) / (4 * sizes[1])}


def links_of(figures, link):
    """Shared memory, the link between hosts, and what a byte between hosts costs the cores. At
    full speed the link is the 2-rank sum's. A tbf-shaped link carries its rate: one pair of ranks
    does not fill it (1 Gbit/s moved 82 MB/s between 2 ranks here), the flows of more ranks do.
    Between namespaces a byte over TCP is copied by the same cores that compute (full speed's
    2-rank sum is that cost; 0 when only shaped links were measured)."""
    measured = {l for (l, _, _) in figures["ref"]}
    unshaped = "full" if "full" in measured else link  # without full-speed sums: the link's own
    shm, net = two_rank_link(figures, unshaped, "shm"), two_rank_link(figures, link, "hosts")
    copy = two_rank_link(figures, "full", "hosts")["beta"] if "full" in measured else 0.0
    rate = re.fullmatch(r"(\d+)(g|m)bit", link)
    if rate:
        net["beta"] = 8 / (int(rate.group(1)) * (1e9 if rate.group(2) == "g" else 1e6))
    return shm, net, copy


def flat_ring(figures, nbytes, order, links):
    """The ring over all N = H p ranks: 2 (N - 1) steps, each moving n / N bytes on every edge at
    once. Its slowest part sets the pace: a host's link carries c edges in each direction (block
    order: c = 1, the edge to the next host; round-robin: every edge leaves its host, c = p); an
    edge inside a host runs at shared memory's speed; and the cores copy every edge's bytes (the
    hosts here share this machine's cores)."""
    hosts, per_host, cores = figures["hosts"], figures["per_host"], figures["cores"]
    shm, net, copy = links
    ranks = hosts * per_host
    crossing = 1 if order == "block" else per_host
    chunk = nbytes / ranks
    cpu = (hosts * crossing * copy + (ranks - hosts * crossing) * shm["beta"]) / cores
    return 2 * (ranks - 1) * (net["alpha"] + chunk * max(crossing * net["beta"], shm["beta"], cpu))


def hierarchical(figures, nbytes, links):
    """coll/han's allreduce in one segment: a reduce inside each host to its leader (ceil(log2 p)
    steps of n bytes over shared memory), a reduce and then a broadcast among the H leaders (binomial
    trees: the first leader's link takes ceil(log2 H) times n bytes in, then sends as many out, one
    direction at a time), and the broadcast back inside each host; the stages do not overlap."""
    shm, net, _ = links
    inside = math.ceil(math.log2(figures["per_host"])) * (shm["alpha"] + nbytes * shm["beta"])
    between = math.ceil(math.log2(figures["hosts"])) * (net["alpha"] + nbytes * net["beta"])
    return 2 * inside + 2 * between


def collective_model(figures, link, order, collective, floats):
    links = links_of(figures, link)
    if collective == "tuned-ring":
        return flat_ring(figures, 4 * floats, order, links)
    if collective == "han-1seg":
        return hierarchical(figures, 4 * floats, links)
    return None


def cell(seconds, scale, width):
    return f"{'crash':>{width}}" if seconds is None else f"{seconds * scale:{width}.{1 if scale > 1e3 else 2}f}"


def collectives_report(path):
    figures = read_collectives(path)
    hosts, per_host = figures["hosts"], figures["per_host"]
    print(f"allreduce on {hosts} hosts x {per_host} ranks ({hosts * per_host} ranks; Open MPI "
          f"{figures.get('openmpi', '?')}; {figures['cores']} cores; OpenBLAS kernels {figures.get('kernels', '?')})")
    links = sorted({k[0] for k in figures["coll"]}, key=lambda l: (l != "full", l))
    for link in links:
        shm, net, copy = links_of(figures, link)
        print(f"  {link}: shared memory alpha {shm['alpha'] * 1e6:.1f} us, {1 / shm['beta'] / 1e9:.2f} GB/s; "
              f"between hosts alpha {net['alpha'] * 1e6:.1f} us, {1 / net['beta'] / 1e9:.3f} GB/s; "
              f"a byte between hosts costs the cores {copy * 1e9:.3f} ns")
    sizes = sorted({k[3] for k in figures["coll"]})
    print(f"{'link':6} {'rank order':12} {'collective':16} {'1 float us':>10} " +
          " ".join(f"{f'{n} fl ms':>13}" for n in sizes[1:]) +
          f" {'MLP step ms':>12} {'model ms':>9} {'error':>7}")
    worst = 0.0
    for link in links:
        for order in ("round-robin", "block"):
            for collective in COLLECTIVES:
                if (link, order, collective, sizes[0]) not in figures["coll"]:
                    continue
                values = [figures["coll"][(link, order, collective, n)] for n in sizes]
                step = figures["step"].get((link, order, collective), "-")
                predicted = collective_model(figures, link, order, collective, sizes[-1])
                error = "-"
                if predicted is not None and values[-1] is not None:
                    e = 100 * (predicted - values[-1]) / values[-1]
                    worst = max(worst, abs(e))
                    error = f"{e:+.1f}%"
                print(f"{link:6} {order:12} {COLLECTIVES[collective]:16} {cell(values[0], 1e6, 10)} " +
                      " ".join(cell(v, 1e3, 13) for v in values[1:]) +
                      f" {step if step == '-' else cell(step, 1e3, 12):>12} "
                      f"{'-' if predicted is None else f'{predicted * 1e3:.3f}':>9} {error:>7}")
    print(f"(model: the forced ring and han in one segment, for the largest sum; worst error {worst:.1f}%)")
    for link in links:
        steps = {(o, c): t for (l, o, c), t in figures["step"].items() if l == link and t is not None}
        if steps:
            (order, collective), best = min(steps.items(), key=lambda item: item[1])
            print(f"fastest MLP step at {link}: {order} order, {COLLECTIVES[collective]} ({best * 1e3:.3f} ms)")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--collectives":
        collectives_report(sys.argv[2])
        return
    if len(sys.argv) != 3:
        fail("usage: scripts/scaling_model.py FIGURES PNG | --collectives FIGURES")
    figures = read(sys.argv[1])
    if not figures["measured"]:
        fail(f"{sys.argv[1]}: no measured configurations")
    model = fit(figures)
    worst = report(figures, model)
    draw(figures, model, sys.argv[2])
    print(f"\nplot written to {sys.argv[2]}")
    print(f"worst prediction error: {worst:.1f}%")


if __name__ == "__main__":
    main()
