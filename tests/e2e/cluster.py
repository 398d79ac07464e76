"""dptrain across hosts: a cluster of 3 namespaced hosts on this machine (scripts/cluster-up.sh),
Open MPI over TCP between them, and Slurm with one node per host.

1. Training across 2 and 3 hosts: the run line names ranks and hosts, and the results are
   bitwise equal to the same rank count on one host; 4 ranks on the 3 hosts through
   DPTRAIN_MPIRUN are numbered host by host, with no note, and equal to 4 on one host; numbered in
   turn over the hosts, dptrain says so in one line; with --deterministic, 2 ranks on 2 hosts
   are bitwise equal to 1 rank.
2. A host that cannot see the data file ends the job with one line naming that host and path.
3. Faults across hosts, each ending every rank non-zero within 60 s with one clear line, keeping
   the last checkpoint, from which a resume across the hosts completes: a rank killed, a host's
   link cut, a rank stopped (SIGSTOP), a link made very slow (tc tbf). A phase that is merely
   slow on one rank (DPTRAIN_FAULT=slow) does not trip the stall watchdog, nor names a slow rank;
   a rank whose every step is slower (DPTRAIN_FAULT=lag) is named once, with the table. Each stall names where
   every rank was (its collective number) and writes their last 64 collectives to OUT.stall-rank0.json.
4. scripts/cluster-bench.sh, scripts/collectives-bench.sh and scripts/scaling.sh (the scaling
   model) on the cluster, small.
5. Slurm across nodes: jobs/train.sbatch with -N 3 (its 6 ranks numbered host by host), compare.sbatch with -N 3,
   scaling.sbatch with -N 2, and `scontrol requeue` of a running 2-node job, which resumes and completes with
   every epoch once.

Exit 77 (skipped) with the reason where this machine refuses namespaces. The cluster is always
stopped, also when a check fails."""
import json
import re
import shutil
import signal
import time

from common import *
import slurm_jobs

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SKIPPED = 77
HOSTS = 3
FAULT_LIMIT = 60  # seconds from a fault to the end of every rank
state = temp_dir()
work = temp_dir()
base_env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OPENBLAS_NUM_THREADS="1")


def cluster_env():
    """The environment STATE/env exports, over ours."""
    env = dict(base_env)
    for line in open(f"{state}/env"):
        m = re.match(r'export (\w+)="?(.*?)"?$', line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


def start_across(ranks, args, env, extra_env=None):
    """dptrain under the cluster's mpirun (ranks spread over the hosts, numbered host by host), started; extra_env is
    passed on to the ranks (mpirun -x)."""
    command = env["DPTRAIN_MPIRUN"].split() + ["-np", str(ranks)]
    for name in (extra_env or {}):
        command += ["-x", name]
    command += [DPTRAIN] + list(args)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env, **(extra_env or {})))


def across(ranks, args, env, timeout=300):
    """The same, run to its end."""
    job = start_across(ranks, args, env)
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:
            job.kill()
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def host_pids(host, name="dptrain"):
    r = subprocess.run(["ip", "netns", "pids", f"dpt-{host}"], capture_output=True, text=True)
    pids = []
    for pid in r.stdout.split():
        try:
            if open(f"/proc/{pid}/comm").read().strip() == name:
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def same_results(a, b, what):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ra, rb = fa["runs/raw"], fb["runs/raw"]
        check(ra.attrs["parameter_hash"] == rb.attrs["parameter_hash"],
              f"{what}: parameter hash {ra.attrs['parameter_hash']:x} != {rb.attrs['parameter_hash']:x}")
        for name in ("predictions", "history/train_loss", "history/test_loss"):
            check(np.array_equal(ra[name][:], rb[name][:]), f"{what}: {name} differs")


def rank_order(env, common_args):
    """DPTRAIN_MPIRUN numbers the ranks host by host (docs/cluster.md#rank-order): 4 ranks on the 3
    hosts are 0, 1 on node1, 2 on node2, 3 on node3, dptrain says nothing about the order, and the
    bits are those of 4 ranks on one host (coll/tuned's sums follow the ranks, not the hosts).
    Numbered in turn over the hosts (--rank-by node), dptrain names the cost in one line."""
    here, there = f"{work}/local4.h5", f"{work}/hosts4.h5"
    must_succeed(run(common_args + ["--out", here], ranks=4))
    r = must_succeed(across(4, common_args[:-1] + ["--out", there], env))
    check(f"4 ranks on {HOSTS} hosts" in r.stdout and "rank order:" not in r.stdout,
          f"4 ranks through DPTRAIN_MPIRUN: {r.stdout[:600]}")
    placed = subprocess.run(env["DPTRAIN_MPIRUN"].split() + ["-np", "4", "sh", "-c", "echo $OMPI_COMM_WORLD_RANK $(hostname)"],
                            capture_output=True, text=True, env=env, timeout=60).stdout
    check(sorted(placed.split("\n"))[1:] == ["0 node1", "1 node1", "2 node2", "3 node3"], f"DPTRAIN_MPIRUN's placement: {placed}")
    same_results(here, there, "4 ranks on 3 hosts against one host")
    turn = dict(env, DPTRAIN_MPIRUN=env["DPTRAIN_MPIRUN"].replace("--rank-by slot", "--rank-by node"))
    r = must_succeed(across(4, common_args[:-1] + ["--out", f"{work}/turn.h5"], turn))
    check(re.search(r"^rank order: the 4 ranks are numbered in turn over the 3 hosts \(4 runs of consecutive ranks on one "
                    r"host, not 3\), so the gradient's ring allreduce crosses between hosts at every step; number them "
                    r"host by host \(mpirun --map-by node --rank-by slot\): docs/cluster.md#rank-order$", r.stdout, re.M),
          f"4 ranks in turn over the hosts: no rank order line in {r.stdout[:800]}")
    print(f"4 ranks on {HOSTS} hosts numbered host by host: no note, bitwise equal to one host; in turn: the note")


def train_across_hosts(env, labels):
    common_args = ["train", "--data", DATA, "--model", "mlp", "--epochs", "1", "--quiet"]
    for ranks in (2, 3):
        here, there = f"{work}/local{ranks}.h5", f"{work}/hosts{ranks}.h5"
        must_succeed(run(common_args + ["--out", here], ranks=ranks))
        r = must_succeed(across(ranks, common_args[:-1] + ["--out", there], env))
        check(f"{ranks} ranks on {ranks} hosts" in r.stdout, f"run line: {r.stdout[:400]}")
        check_results(there, labels, runs=["raw"])
        with h5py.File(there, "r") as f:
            check(f.attrs["ranks"] == ranks and f.attrs["hosts"] == ranks, f"ranks/hosts attributes of {there}")
        same_results(here, there, f"{ranks} ranks on {ranks} hosts against one host")
        print(f"{ranks} ranks on {ranks} hosts: bitwise equal to {ranks} ranks on one host")
    rank_order(env, common_args)
    deterministic = common_args + ["--deterministic"]
    here, there = f"{work}/deterministic1.h5", f"{work}/deterministic-hosts.h5"
    must_succeed(run(deterministic + ["--out", here], ranks=1))
    must_succeed(across(2, deterministic + ["--out", there], env))
    same_results(here, there, "--deterministic: 2 ranks on 2 hosts against 1 rank")
    print("--deterministic: 2 ranks on 2 hosts bitwise equal to 1 rank")


def host_without_data(env):
    shared = f"{work}/shared"
    os.makedirs(shared)
    data = f"{shared}/data.h5"
    shutil.copy(DATA, data)
    with open(f"{state}/hosts/node2/hide", "w") as f:
        f.write(shared + "\n")
    try:
        out = f"{work}/hidden.h5"
        r = across(2, ["train", "--data", data, "--out", out, "--model", "mlp", "--epochs", "1"], env, timeout=120)
    finally:
        os.remove(f"{state}/hosts/node2/hide")
    errors = [line for line in r.stderr.splitlines() if line.startswith("dptrain: error:")]
    check(r.returncode != 0 and len(errors) == 1 and "rank 1 on node2" in errors[0] and data in errors[0] and
          "No such file" in errors[0] and "filesystem that all 2 hosts share" in errors[0],
          f"a host without the data file: exit {r.returncode}: {r.stderr[-1500:]}")
    check(not os.path.exists(out), "partial output after the failure")
    print("a host without the data file:", errors[0])


# ---- faults -----------------------------------------------------------------------------------

def kill_rank(env):
    os.kill(host_pids("node2")[0], signal.SIGKILL)


def cut_link(env):
    subprocess.run(["ip", "-n", "dpt-node2", "link", "set", "eth0", "down"], check=True)


def stop_rank(env):
    os.kill(host_pids("node2")[0], signal.SIGSTOP)


def slow_link(env):
    subprocess.run(["ip", "netns", "exec", "dpt-node2", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                    "rate", "100kbit", "burst", "16kb", "latency", "1s"], check=True)


def repair(env):
    subprocess.run(["ip", "-n", "dpt-node2", "link", "set", "eth0", "up"], check=False)
    subprocess.run(["ip", "netns", "exec", "dpt-node2", "tc", "qdisc", "del", "dev", "eth0", "root"],
                   capture_output=True, check=False)


# The phase is whichever the fault lands in: a training step mostly, but on a slow machine the
# cut can fall in the end-of-epoch evaluation and checkpoint (CI saw "(evaluation and checkpoint):
# an agreement has waited 6 s"); every phase names the collective and the rank that did not arrive.
STALL = re.compile(r"rank 0 on node1: stalled at epoch \d+, step \d+ \((a training step|evaluation and checkpoint|"
                   r"a checkpoint)\): (the gradient allreduce|an allreduce|an agreement|a broadcast|a gather|a barrier) "
                   r"has waited \d+ s; did not arrive: rank 1 on node2")
FAULTS = [  # name, how, what the one clear line must say
    ("a rank killed", kill_rank, re.compile(r"process rank 1 .* on node \S+ exited on signal 9")),
    ("a link cut", cut_link, re.compile(STALL.pattern + "|ORTE has lost communication with a remote daemon")),
    ("a rank stopped", stop_rank, STALL),
    ("a link too slow", slow_link, STALL),
]
EPOCHS = 6
# The watchdog's second line: where each rank was, and the record of their last collectives.
AT_STALL = re.compile(r"dptrain: at the stall: (rank 0 on node1 waits in collective #(\d+) \([^)]*\)[^\n]*); the last "
                      r"64 collectives of every rank that answered: (\S+)")


def check_stall_record(name, stderr, record_path):
    """A stall's forensics: the summary line and the JSON record agree on where rank 0 waited."""
    at = AT_STALL.search(stderr)
    check(at and at.group(3) == record_path, f"{name}: no line saying where the ranks were in: {stderr[-2500:]}")
    with open(record_path) as f:
        record = json.load(f)
    ranks = record["ranks"]
    check(len(ranks) == 2 and ranks[1]["host"] == "node2" and record["reporter"] == 0,
          f"{name}: the record's ranks: {ranks}")
    mine = ranks[0]
    last = mine["recent_collectives"][-1]
    check(mine["answered"] and mine["waiting"] and mine["collective"] == int(at.group(2)) == last["number"]
          and last["seconds"] is None and len(mine["recent_collectives"]) == 64,
          f"{name}: rank 0 in the record: {json.dumps(mine)[:1500]}")
    numbers = [c["number"] for c in mine["recent_collectives"]]
    check(numbers == list(range(numbers[-1] - 63, numbers[-1] + 1)), f"{name}: the record's numbers {numbers}")
    other = ranks[1]
    check(not other["answered"] or other["collective"] >= numbers[-1] - 1, f"{name}: rank 1: {json.dumps(other)[:800]}")
    return at.group(1)


def fault(env, name, inject, message):
    checkpoint, out = f"{work}/fault.h5", f"{work}/fault-results.h5"
    record = out + ".stall-rank0.json"
    for path in (checkpoint, out, record, out + ".stall-rank1.json"):
        if os.path.exists(path):
            os.remove(path)
    args = ["train", "--data", DATA, "--out", out, "--checkpoint", checkpoint, "--model", "mlp", "--epochs", str(EPOCHS),
            "--stall-timeout", "4", "--quiet"]
    job = start_across(2, args, env)
    try:
        slurm_jobs.wait_checkpoint_epoch(checkpoint, 1, 120)
        time.sleep(0.5)
        struck = time.time()
        inject(env)
        stdout, stderr = job.communicate(timeout=FAULT_LIMIT + 30)
        ended = time.time() - struck
    finally:
        if job.poll() is None:
            job.kill()
    # every rank ends, on every host
    deadline = struck + FAULT_LIMIT
    while time.time() < deadline and (host_pids("node1") or host_pids("node2")):
        time.sleep(0.5)
    left = host_pids("node1") + host_pids("node2")
    repair(env)
    for pid in left:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
    check(not left, f"{name}: ranks still running {FAULT_LIMIT} s after the fault: {left}")
    check(job.returncode != 0 and ended <= FAULT_LIMIT,
          f"{name}: exit {job.returncode} after {ended:.0f} s: {stderr[-2000:]}")
    check(message.search(stderr), f"{name}: no clear line in: {stderr[-2500:]}")
    check(not os.path.exists(out), f"{name}: results written by a failed run")
    line = message.search(stderr).group(0)
    where = check_stall_record(name, stderr, record) if STALL.search(stderr) else "no stall: MPI ended the job"
    # the last checkpoint is intact and a resume across the hosts completes
    r = must_succeed(across(2, args + ["--resume"], env))
    with h5py.File(out, "r") as f:
        history = list(f["runs/raw/history/epoch"][:])
    check(history == list(range(1, EPOCHS + 1)), f"{name}: history after the resume {history}")
    print(f"{name}: ended after {ended:.1f} s ({line[:120]}...); at the stall: {where}; resumed and completed")


def merely_slow(env):
    out = f"{work}/slow.h5"
    job_env = {"DPTRAIN_FAULT": "slow@1:1"}  # rank 1's end of epoch 1 takes 6 s longer
    job = start_across(2, ["train", "--data", DATA, "--out", out, "--model", "mlp", "--epochs", "2", "--stall-timeout", "2"], env,
                       job_env)
    stdout, stderr = job.communicate(timeout=120)
    check(job.returncode == 0 and os.path.exists(out),
          f"a slow phase on one rank tripped the watchdog: exit {job.returncode}: {stderr[-1500:]}")
    # a slow end of epoch is no slow rank: its steps were as fast as the others'
    check("a slow rank" not in stdout + stderr, f"a straggler named where no rank's steps were slow: {stdout}")
    print("a phase 3x longer than --stall-timeout on one rank: the run completed, and no rank was named slow")


SLOW_RANK = re.compile(r"dptrain: a slow rank: rank 1 on node2 computed (\d+\.\d)x the median of the other ranks in "
                       r"epochs 1-2; they waited (\d+)% of their steps for it")


def straggler(env):
    """A host whose rank computes slower (DPTRAIN_FAULT=lag: each of its steps 10 ms longer) is named once,
    with what it costs the others, and the per-rank timing table shows it. The training rows are
    streamed from the file on both hosts (--memory-budget), which the run line says."""
    out = f"{work}/straggler.h5"
    job = start_across(2, ["train", "--data", DATA, "--out", out, "--model", "mlp", "--epochs", "3", "--no-tta",
                           "--memory-budget", "8"], env, {"DPTRAIN_FAULT": "lag@1"})
    stdout, stderr = job.communicate(timeout=300)
    check(job.returncode == 0, f"the run with a slow rank failed: exit {job.returncode}: {stderr[-1500:]}")
    check("training data streamed from the file within --memory-budget 8 MB" in stdout,
          f"the run across hosts was not streamed: {stdout[:1500]}")
    named = [line for line in stdout.splitlines() if "a slow rank" in line]
    check(len(named) == 1 and SLOW_RANK.fullmatch(named[0]), f"the slow rank's line: {named}")
    with h5py.File(out, "r") as f:
        run = f["runs/raw"]
        table, hosts = run["rank_timing"][:], [h.decode() if isinstance(h, bytes) else h for h in run.attrs["rank_hosts"]]
    check(table.shape == (3, 2, 2) and hosts == ["node1", "node2"], f"rank_timing {table.shape}, rank_hosts {hosts}")
    compute, wait = table[:, :, 0], table[:, :, 1]
    check(np.all(compute[:, 1] >= 1.5 * compute[:, 0]) and np.all(wait[:, 0] > wait[:, 1]),
          f"rank 1 is not the slow one in the table: compute {compute.tolist()}, wait {wait.tolist()}")
    print(f"a slow rank: {named[0]}")


def cluster_bench(env):
    """scripts/cluster-bench.sh on this cluster, small: every row there and filled (figures are
    printed, never timed by a test)."""
    r = subprocess.run([f"{ROOT}/scripts/cluster-bench.sh", os.path.dirname(DPTRAIN)], capture_output=True,
                       text=True, timeout=300,
                       env=dict(env, BENCH_DATA=DATA, BENCH_MLP_EPOCHS="1", BENCH_CNN_EPOCHS="0",
                                BENCH_BIG_FLOATS="65536", DPTRAIN_CLUSTER_DIR=state))
    check(r.returncode == 0, f"cluster-bench.sh: exit {r.returncode}: {r.stderr[-1500:]}")
    number = r"\d+\.\d+"
    for label in ("1 host (shared memory)", "2 hosts (TCP, full speed)", "2 hosts, links at 10 Gbit/s",
                  "2 hosts, links at 1 Gbit/s"):
        check(re.search(rf"^{re.escape(label)} +{number} +{number} +{number} +{number} +{number} +\d+ +\d+ +\d+ +\d+ +-$", r.stdout,
                        re.M), f"cluster-bench.sh: no row '{label}' in {r.stdout}")
    check("OpenBLAS kernels:" in r.stdout, "cluster-bench.sh names the kernels")
    check(re.search(r"^\(1 rank, no allreduce: MLP \d+ samples/s;", r.stdout, re.M), f"the one-rank line: {r.stdout}")
    shaped = subprocess.run(["ip", "netns", "exec", "dpt-node1", "tc", "qdisc", "show", "dev", "eth0"],
                            capture_output=True, text=True).stdout
    check("tbf" not in shaped, f"cluster-bench.sh left the links shaped: {shaped}")
    print("cluster-bench.sh: every row, links unshaped afterwards")


def collectives_bench(env):
    """scripts/collectives-bench.sh on this cluster, small (full speed only, 2 sums a size, 1 short
    run a step): every row of the table there, each cell a figure or "crash" (coll/han as Open MPI
    4.1.4 runs it), han in one segment and coll/tuned summing right (bench_kernels checks every
    sum), the model's rows and its last line, the links unshaped (figures are printed, never
    judged by a test)."""
    r = subprocess.run([f"{ROOT}/scripts/collectives-bench.sh", os.path.dirname(DPTRAIN)], capture_output=True,
                       text=True, timeout=400,
                       env=dict(env, BENCH_DATA=DATA, COLL_RATES="full", COLL_REPS="2", COLL_REPEATS="1",
                                COLL_IMAGES="2560", DPTRAIN_CLUSTER_DIR=state))
    check(r.returncode == 0, f"collectives-bench.sh: exit {r.returncode}: {r.stderr[-1500:]}")
    value = r"(\d+\.\d+|crash)"
    for order in ("round-robin", "block"):
        for label, step in (("tuned \\(default\\)", True), ("tuned, ring", False), ("han", False),
                            ("han, 1 segment", True)):
            line = rf"^full +{order} +{label} +{value} +{value} +{value} +" + (rf"{value} " if step else "- ")
            check(re.search(line, r.stdout, re.M), f"collectives-bench.sh: no row {order} {label} in {r.stdout}")
        for label in ("tuned \\(default\\)", "tuned, ring", "han, 1 segment"):
            check(re.search(rf"^full +{order} +{label} +\d+\.\d+ +\d+\.\d+ +\d+\.\d+ ", r.stdout, re.M),
                  f"collectives-bench.sh: {order} {label} failed: {r.stdout} {r.stderr[-1500:]}")
    check(re.search(r"^full +block +tuned, ring .* [+-]\d+\.\d%$", r.stdout, re.M), "the model's ring row")
    check(re.search(r"^fastest MLP step at full: ", r.stdout, re.M), f"the last line: {r.stdout[-300:]}")
    check("OpenBLAS kernels " in r.stdout and "Open MPI 4" in r.stdout, f"the header: {r.stdout[:300]}")
    print("collectives-bench.sh: every row; coll/tuned and han in one segment sum right")


def scaling_model(env):
    """scripts/scaling.sh on this cluster, small (2 hosts, short runs): every measured configuration
    in its table beside a prediction, the plot, the figures kept, the last line, the links unshaped;
    a bad SCALING_HOSTS refused before anything starts (the error figure is printed, never judged
    by a test: short runs on a shared machine are noise)."""
    out = f"{work}/scaling"
    bad = subprocess.run([f"{ROOT}/scripts/scaling.sh", os.path.dirname(DPTRAIN), out], capture_output=True,
                         text=True, timeout=60, env=dict(env, SCALING_HOSTS="1"))
    check(bad.returncode == 1 and "scaling: SCALING_HOSTS must be 2..8 (got '1')" in bad.stderr and
          not os.path.exists(out), f"SCALING_HOSTS=1: {bad.returncode} {bad.stderr[-300:]}")
    r = subprocess.run([f"{ROOT}/scripts/scaling.sh", os.path.dirname(DPTRAIN), out], capture_output=True, text=True,
                       timeout=400, env=dict(env, BENCH_DATA=DATA, SCALING_HOSTS="2", SCALING_IMAGES="2560",
                                             SCALING_BIG_FLOATS="4096", SCALING_REPEATS="1",
                                             DPTRAIN_CLUSTER_DIR=state))
    check(r.returncode == 0, f"scaling.sh: exit {r.returncode}: {r.stderr[-1500:]}")
    rows = re.findall(r"^(mlp|cnn) +(fp32|bf16|psgd) +(.+?) +(\d) +\d+\.\d+ +\d+\.\d+ +[+-]\d+\.\d%$", r.stdout, re.M)
    check(len(rows) == 19, f"scaling.sh: 19 measured configurations expected, got {len(rows)}: {r.stdout}")
    check(len([row for row in rows if row[1] == "psgd"]) == 4, f"scaling.sh: the PowerSGD rows: {r.stdout}")
    check(re.search(r"\nworst prediction error: \d+\.\d%\n?$", r.stdout), f"scaling.sh: last line: {r.stdout[-300:]}")
    check(re.search(r"^mlp +10 GbE +bf16 +weak ", r.stdout, re.M) and re.search(r"^cnn +1 GbE +psgd +strong ", r.stdout, re.M),
          "scaling.sh: the cluster predictions")
    check(open(f"{out}/scaling.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n", "scaling.png is not a PNG")
    check(os.path.getsize(f"{out}/scaling-figures.txt") > 0, "the figures behind the plot are kept")
    shaped = subprocess.run(["ip", "netns", "exec", "dpt-node1", "tc", "qdisc", "show", "dev", "eth0"],
                            capture_output=True, text=True).stdout
    check("tbf" not in shaped, f"scaling.sh left the links shaped: {shaped}")
    print("scaling.sh: 15 configurations measured and predicted, the plot, links unshaped afterwards")


# ---- Slurm across nodes -----------------------------------------------------------------------

def slurm_across_nodes(env, labels):
    results = f"{work}/jobs"
    os.makedirs(results)
    exports = {"DPTRAIN_DATA": DATA, "DPTRAIN_RESULTS": results, "DPTRAIN_BIN": DPTRAIN}
    log = f"--output={results}/slurm-%j.out"

    def job_file(job, name):
        return f"{results}/job-{job}/{name}"

    for nodes in (3,):  # 2 nodes: the requeued job below
        job = slurm_jobs.submit(env, ROOT, "jobs/train.sbatch", dict(exports, DPTRAIN_ARGS="--model mlp --epochs 1 --quiet"),
                                [f"-N{nodes}", log])
        slurm_jobs.wait_state(env, ROOT, job, ("COMPLETED",), 300, f"{results}/slurm-{job}.out")
        with h5py.File(job_file(job, "results.h5"), "r") as f:
            check(f.attrs["hosts"] == nodes and f.attrs["ranks"] == 2 * nodes,
                  f"train.sbatch -N {nodes}: {f.attrs['ranks']} ranks on {f.attrs['hosts']} hosts")
        check_results(job_file(job, "results.h5"), labels, runs=["raw"])
        out = open(f"{results}/slurm-{job}.out").read()
        check(f"{2 * nodes} ranks on {nodes} hosts" in out and "rank order:" not in out,
              f"train.sbatch -N {nodes}: the ranks are not numbered host by host: {out[-1500:]}")
        print(f"sbatch -N {nodes} jobs/train.sbatch: {2 * nodes} ranks on {nodes} hosts, numbered host by host")

    job = slurm_jobs.submit(env, ROOT, "jobs/compare.sbatch",
                            dict(exports, DPTRAIN_PCA="0,50", DPTRAIN_ARGS="--model mlp --epochs 1"), ["-N3", log])
    slurm_jobs.wait_state(env, ROOT, job, ("COMPLETED",), 300, f"{results}/slurm-{job}.out")
    check(os.path.exists(job_file(job, "report/REPORT.md")), "compare.sbatch -N 3 wrote no report")
    with h5py.File(job_file(job, "compare.h5"), "r") as f:
        check(sorted(f["runs"]) == ["pca50", "raw"] and f.attrs["hosts"] == 3, "compare.sbatch -N 3 results")
    print("sbatch -N 3 jobs/compare.sbatch: raw and pca50 on 3 hosts, with the report")

    job = slurm_jobs.submit(env, ROOT, "jobs/scaling.sbatch", dict(exports, DPTRAIN_ARGS="--model mlp --epochs 1"),
                            ["-N2", log])
    slurm_jobs.wait_state(env, ROOT, job, ("COMPLETED",), 300, f"{results}/slurm-{job}.out")
    table = open(f"{results}/slurm-{job}.out").read()
    check(all(re.search(rf"^ +{n} +\d+ +\d+\.\d\dx", table, re.M) for n in (1, 2, 4)), f"scaling table: {table[-800:]}")
    print("sbatch -N 2 jobs/scaling.sbatch: 1, 2 and 4 ranks")

    # requeue in the middle of a 2-node job, coming back on one node: it resumes from its
    # checkpoint on the ranks it gets and completes
    epochs = 6
    # round 1's default network: the default has 3.5x its FLOPs and a 7.45 MB gradient (2.14 MB)
    # to send over the namespaces' links every step, for the same check
    job = slurm_jobs.submit(env, ROOT, "jobs/train.sbatch",
                            dict(exports, DPTRAIN_ARGS=f"--model mlp:512,256 --epochs {epochs} --quiet"), ["-N2", log])
    slurm_jobs.wait_state(env, ROOT, job, ("RUNNING",), 120)
    slurm_jobs.wait_checkpoint_epoch(job_file(job, "checkpoint.h5"), 2, 180)
    slurm_jobs.requeue_resized(env, ROOT, job, "NumNodes=1", "NumCPUs=2", "NumTasks=2", "TasksPerNode=2")
    slurm_jobs.wait_state(env, ROOT, job, ("COMPLETED",), 400, f"{results}/slurm-{job}.out")
    out = open(f"{results}/slurm-{job}.out").read()
    check("restart 1" in out and "resumed from" in out and "saved by 4 ranks, this run has 2" in out,
          f"the 2-node job did not resume on 1 node: {out[-3000:]}")
    with h5py.File(job_file(job, "results.h5"), "r") as f:
        history = list(f["runs/raw/history/epoch"][:])
        check(history == list(range(1, epochs + 1)) and f.attrs["hosts"] == 1 and f.attrs["ranks"] == 2,
              f"requeued job: history {history}, {f.attrs['ranks']} ranks on {f.attrs['hosts']} hosts")
    print("a running 4-rank 2-node job requeued onto 1 node: resumed on 2 ranks, every epoch once")


def harness_refusals():
    """cluster-up.sh refuses what it must not touch, with one line, before making anything."""
    def up(*args):
        return subprocess.run([f"{ROOT}/scripts/cluster-up.sh", *args], capture_output=True, text=True, timeout=120,
                              env=base_env)
    for args, fragment in ((["0"], "HOSTS must be a number from 1 to 16"), (["lots"], "HOSTS must be a number"),
                           (["17"], "HOSTS must be a number from 1 to 16")):
        r = up(*args)
        check(r.returncode == 2 and fragment in r.stderr, f"cluster-up.sh {args}: {r.returncode} {r.stderr}")
    foreign = tempfile.mkdtemp(prefix="dptrain-foreign-")
    with open(f"{foreign}/slurm.conf", "w") as f:
        f.write("mine")
    r = up("2", foreign)
    check(r.returncode != 0 and "not a state folder of cluster-up.sh" in r.stderr and
          os.listdir(foreign) == ["slurm.conf"] and open(f"{foreign}/slurm.conf").read() == "mine",
          f"a foreign state folder: {r.stderr}")
    spaced = f"{temp_dir()}/my cluster"
    r = up("2", spaced)
    check(r.returncode == 1 and "cannot hold its spaces" in r.stderr and not os.path.exists(spaced) and
          "dpt-head" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout,
          f"a state folder with a space: {r.stderr}")
    return up


def down_of_another_folder():
    """Without the owner file (/run wiped), cluster-down.sh given another folder stops nothing: it had
    stopped every dpt-* namespace on the machine whatever folder it was given."""
    owner = open("/run/dptrain-cluster.owner").read()
    os.remove("/run/dptrain-cluster.owner")
    try:
        r = subprocess.run([f"{ROOT}/scripts/cluster-down.sh", temp_dir()], capture_output=True, text=True, timeout=60)
    finally:
        with open("/run/dptrain-cluster.owner", "w") as f:
            f.write(owner)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check(r.returncode == 0 and "nothing to stop" in r.stdout and all(f"dpt-node{i}" in namespaces for i in
          range(1, HOSTS + 1)) and "dpt-head" in namespaces, f"cluster-down of another folder: {r} {namespaces}")


def main():
    up = harness_refusals()
    started = up(str(HOSTS), state)
    if started.returncode != 0:
        print("SKIPPED: the cluster could not start here:", (started.stderr or started.stdout).strip()[-1500:])
        sys.exit(SKIPPED)
    print(started.stdout.strip())
    again = up(str(HOSTS), state)
    check(again.returncode == 0, f"cluster-up.sh on a running cluster: {again.stderr}")
    other = up("2", temp_dir())
    check(other.returncode != 0 and "a cluster is already up" in other.stderr, f"a second cluster: {other.stderr}")
    down_of_another_folder()
    env = cluster_env()
    with h5py.File(DATA, "r") as f:
        labels = f["test/labels"][:]
    train_across_hosts(env, labels)
    host_without_data(env)
    for name, inject, message in FAULTS:
        fault(env, name, inject, message)
    merely_slow(env)
    straggler(env)
    cluster_bench(env)
    collectives_bench(env)
    scaling_model(env)
    slurm_across_nodes(env, labels)
    print("ok")


try:
    main()
finally:
    down = subprocess.run([f"{ROOT}/scripts/cluster-down.sh", state], capture_output=True, text=True, timeout=120)
    print(down.stdout.strip(), down.stderr.strip())
    check(subprocess.run(["ip", "link", "show", "dptbr0"], capture_output=True).returncode != 0,
          "cluster-down.sh left the bridge")
