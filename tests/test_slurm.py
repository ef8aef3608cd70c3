"""Profiles and scale-out.

Fast checks: the SLURM profile sends every rule that requests a GPU to the GPU
partition with one GPU, and Snakemake picks up the default profile.

Integration (slow): the tiny workflow through snakemake-executor-plugin-slurm and
``profiles/slurm`` on a real single-node SLURM cluster that this test starts itself from
Debian's slurm-wlm and munge (installed with apt-get when missing): munged with its own
key, slurmctld and slurmd in the foreground, config at /etc/slurm/slurm.conf,
proctrack/linuxproc, task/none, no cgroups and no slurmdbd. The node advertises one
GPU as a generic resource backed by /dev/null, so the profile's ``--gpus=1`` requests
are submitted unchanged and SLURM schedules them (CUDA_VISIBLE_DEVICES=0 in the job;
TensorFlow without a GPU runs on the CPU). Only site-specific values are overridden
for the test node: memory capped to the node's, one thread per job (two jobs share the
2-core node), and, without accounting, job status from squeue (MinJobAge 300 s >= 3x
the 2 s initial wait; sacct would hang without slurmdbd). Every daemon is stopped by
its PID, and /etc/slurm/{slurm,gres}.conf written here are removed again.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from helpers import planned_jobs

REPO = Path(__file__).resolve().parent.parent
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "profiles" / "default" / "config.yaml"
MARKER = "# written by eae tests/test_slurm.py"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
LOCK_FILE = "/tmp/eae-test-slurm.lock"
# The tiny chain under SLURM: sampler check, MNIST data, EAE training and ensemble and
# both baselines (3 GPU jobs, 2 CPU jobs before them, 1 GPU job after).
TARGETS = ["results/validation/sampler.csv", "results/mnist/eae/ensemble.zarr",
           "results/mnist/vae", "results/mnist/ae"]
RUN_TIMEOUT_S = 600


def gpu_rules() -> set[str]:
    """Rules in workflow/rules/*.smk whose resources request a GPU."""
    names = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M):
            match = re.match(r"rule (\w+):", block)
            if match and re.search(r"^\s+gpu=\s*[1-9]", block, re.M):
                names.add(match.group(1))
    return names


# ----------------------------------------------------------------------- fast checks


def test_slurm_profile_sends_every_gpu_rule_to_a_gpu():
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    cpu_partition = profile["default-resources"]["slurm_partition"]
    rules = gpu_rules()
    assert {"images_train_eae", "images_train_baseline", "images_ensemble"} <= rules
    for rule in rules:
        res = profile["set-resources"].get(rule)
        assert res, f"profiles/slurm: no set-resources for GPU rule {rule}"
        assert res["gpu"] == 1 and res["slurm_partition"] != cpu_partition, rule
        assert res["mem_mb"] > 0 and res["runtime"] > 0, rule
        assert profile["set-threads"][rule] >= 1, rule
    # a GPU-less rule must not be sent to the GPU partition by name
    assert not set(profile["set-resources"]) - rules - {"archive"}


def test_default_profile_is_picked_up_and_limits_gpu_jobs(tmp_path):
    profile = yaml.safe_load(DEFAULT_PROFILE.read_text())
    assert profile["cores"] == "all" and profile["resources"]["gpu"] == 1
    work = tmp_path / "wf"
    work.mkdir()
    (work / "config").symlink_to(REPO / "config")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                             "-d", str(work), "-n"], capture_output=True, text=True, cwd=work)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert f"workflow specific profile {REPO / 'profiles' / 'default'}" in out


# ------------------------------------------------------------------- the test cluster


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_slurm_installed() -> float:
    """apt-get install slurm-wlm munge when missing (skip where it cannot); seconds spent."""
    needed = ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")
    if all(shutil.which(tool) for tool in needed):
        return 0.0
    if not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm, munge")
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        try:
            result = _run(cmd, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"{' '.join(cmd)} timed out (no network to the Debian mirror?)")
        if result.returncode != 0:
            pytest.skip(f"{' '.join(cmd)} failed (no network to the Debian mirror?): "
                        f"{result.stderr.strip()[-500:]}")
    if not all(shutil.which(tool) for tool in needed):
        pytest.skip("slurm-wlm/munge installed but their daemons are not on PATH")
    return time.monotonic() - t0


def _ours_or_absent(path: Path) -> bool:
    return not path.exists() or path.read_text().startswith(MARKER)


def _node_line() -> tuple[str, int, int]:
    """(NodeName=... line of the real hardware, CPUs, RealMemory) from `slurmd -C`."""
    first = _run(["slurmd", "-C"], timeout=30).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in first.split())
    cpus, memory = int(fields["CPUs"]), int(fields["RealMemory"])
    # leave the OS some memory: a node claiming more than it has is set DRAINED
    memory = max(1000, int(memory * 0.9))
    hardware = " ".join(f"{k}={fields[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard",
                                                     "CoresPerSocket", "ThreadsPerCore")
                        if k in fields)
    return f"NodeName={fields['NodeName']} NodeAddr=127.0.0.1 {hardware} " \
           f"RealMemory={memory} Gres=gpu:1 State=UNKNOWN", cpus, memory


def _slurm_conf(base: Path, node: str, partitions: list[str], munge_socket: Path) -> str:
    name = node.split()[0].split("=", 1)[1]
    lines = [
        MARKER,
        "ClusterName=eaetest",
        f"SlurmctldHost={name}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "GresTypes=gpu",
        # finished jobs stay visible to squeue this long: the status check relies on it
        "MinJobAge=300",
        "ReturnToService=2",
        "MpiDefault=none",
        node,
    ]
    for i, partition in enumerate(partitions):
        default = "YES" if i == 0 else "NO"
        lines.append(f"PartitionName={partition} Nodes=ALL Default={default} "
                     "MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def _wait_for(predicate, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text()[-2000:] if Path(p).exists() else ''}"
                      for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop one daemon this test started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed "
                    "(pip install -e '.[slurm]')")
    apt_seconds = _ensure_slurm_installed()
    for path in (SLURM_CONF, GRES_CONF):
        if not _ours_or_absent(path):
            pytest.skip(f"{path} exists (a real SLURM installation?): not replacing it")
    lock = open(LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pytest.skip("another run of this test holds the test cluster")
    if _run(["pgrep", "-x", "slurmctld"]).returncode == 0:
        pytest.skip("a slurmctld is already running on this machine")

    base = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    # munged wants every directory above its socket traversable by all: not pytest's
    munge_dir = Path(tempfile.mkdtemp(prefix="eae-test-munge-", dir="/tmp"))
    munge_dir.chmod(0o755)
    key = munge_dir / "munge.key"
    munge_socket = munge_dir / "munge.socket"
    procs: list[subprocess.Popen] = []
    wrote: list[Path] = []

    def start(cmd, name):
        out = open(base / f"{name}.out", "w")
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=base))
        return procs[-1]

    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    partitions = [profile["default-resources"]["slurm_partition"]]
    partitions += sorted({r["slurm_partition"] for r in profile["set-resources"].values()
                          if r.get("slurm_partition")} - set(partitions))
    try:
        # a key of its own: /etc/munge/munge.key belongs to the munge user, and munged
        # running as root refuses a key it does not own
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True,
                       capture_output=True)
        start(["munged", "-F", f"--key-file={key}", f"--socket={munge_socket}",
               f"--log-file={munge_dir / 'munged.log'}", f"--pid-file={munge_dir / 'munged.pid'}",
               f"--seed-file={munge_dir / 'munged.seed'}"], "munged")
        munged = procs[-1]
        _wait_for(lambda: munge_socket.exists() or munged.poll() is not None, 20,
                  "munged's socket", [base / "munged.out"])
        assert munged.poll() is None, (base / "munged.out").read_text()
        node, cpus, memory = _node_line()
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(_slurm_conf(base, node, partitions, munge_socket))
        wrote.append(SLURM_CONF)
        node_name = node.split()[0].split("=", 1)[1]
        GRES_CONF.write_text(f"{MARKER}\nNodeName={node_name} Name=gpu File=/dev/null\n")
        wrote.append(GRES_CONF)
        start(["slurmctld", "-D", "-i"], "slurmctld")
        start(["slurmd", "-D"], "slurmd")
        logs = [base / "slurmctld.out", base / "slurmd.out", base / "slurmctld.log",
                base / "slurmd.log"]

        def node_idle():
            state = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10).stdout.split()
            return bool(state) and all(s == "idle" for s in state)

        _wait_for(node_idle, 60, "the SLURM node to become idle", logs)
        yield {"base": base, "cpus": cpus, "memory": memory, "partitions": partitions,
               "apt_seconds": apt_seconds, "logs": logs}
    finally:
        if procs and procs[-1].poll() is None:
            # jobs left by a failed run: cancel them before their daemons go
            _run(["scancel", "--full", "--user", "root"], timeout=30)
            try:
                _wait_for(lambda: not _run(["squeue", "-h", "-t", "RUNNING,COMPLETING"],
                                           timeout=10).stdout.strip(), 30, "cancelled jobs")
            except AssertionError:
                pass  # stop the daemons anyway
        for proc in reversed(procs):
            _stop(proc)
        for path in wrote:
            path.unlink(missing_ok=True)
        shutil.rmtree(munge_dir, ignore_errors=True)
        lock.close()


# ---------------------------------------------------------------- the workflow on it


def _test_profile(cluster, dest: Path) -> Path:
    """profiles/slurm with only the site-specific values changed for the test node."""
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    for res in [profile["default-resources"], *profile["set-resources"].values()]:
        if "mem_mb" in res:
            res["mem_mb"] = min(res["mem_mb"], cluster["memory"] // 2)
    profile.pop("set-threads", None)
    profile.update({
        # one CPU a job: two jobs share the 2-core node (TensorFlow sees both cores
        # anyway: no cgroups); GPU jobs queue for the node's one GPU
        "max-threads": 1,
        "jobs": 4,
        "latency-wait": 5,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
    })
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def _squeue_all() -> dict[str, dict[str, str]]:
    out = _run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%P|%k"],
               timeout=30).stdout
    jobs = {}
    for line in out.splitlines():
        jobid, state, partition, comment = line.split("|", 3)
        jobs[jobid.strip()] = {"state": state, "partition": partition, "comment": comment}
    return jobs


@pytest.mark.slow
def test_tiny_workflow_runs_as_slurm_jobs(slurm_cluster, tmp_path, frey_config):
    work = tmp_path / "wf"
    work.mkdir()
    (work / "config").symlink_to(REPO / "config")
    (work / "local.yaml").write_text(frey_config)
    profile = _test_profile(slurm_cluster, tmp_path / "profile")
    cmd = ["timeout", "-k", "30", str(RUN_TIMEOUT_S), sys.executable, "-m", "snakemake",
           *TARGETS, "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--workflow-profile", str(profile),
           "--configfile", str(REPO / "config" / "test.yaml"), str(work / "local.yaml")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    seconds = time.monotonic() - t0
    log = result.stdout + result.stderr
    (slurm_cluster["base"] / "snakemake.out").write_text(log)
    assert result.returncode == 0, f"rc={result.returncode} after {seconds:.0f}s\n" + log[-8000:]

    assert "Falling back to 'sacct'" not in log  # squeue status checks, as configured
    planned = planned_jobs(log)
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) "
                           r"\(log: ([^)]+)\)", log)
    assert sum(planned.values()) >= 6 and len(submitted) == sum(planned.values()), (
        planned, submitted)
    slurm = _squeue_all()
    gpu = gpu_rules()
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    ran = {}
    for _, slurm_id, slurm_log in submitted:
        job = slurm[slurm_id]  # still known to slurmctld (MinJobAge)
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", job["comment"]).group(1)
        ran[rule] = ran.get(rule, 0) + 1
        assert job["state"] == "COMPLETED", (slurm_id, job)
        expected = (profile["set-resources"][rule]["slurm_partition"] if rule in gpu
                    else profile["default-resources"]["slurm_partition"])
        assert job["partition"] == expected, (rule, job)
        details = _run(["scontrol", "show", "job", "-o", slurm_id], timeout=30).stdout
        tres = re.search(r"TresPerJob=(\S+)", details)
        assert bool(tres and "gpu" in tres.group(1)) == (rule in gpu), (rule, details)
        assert Path(work / slurm_log).exists() or Path(slurm_log).exists(), slurm_log
    assert ran == planned, (ran, planned)  # every planned job ran as a SLURM job

    results = work / "results"
    for path in ["validation/sampler.csv", "mnist/eae/model/encoder.keras",
                 "mnist/eae/ensemble.zarr/zarr.json", "mnist/vae/encoder.keras",
                 "mnist/ae/decoder.keras"]:
        assert (results / path).exists(), path
    print(f"\nSLURM run: {len(submitted)} jobs in {seconds:.0f} s; "
          f"apt-get install took {slurm_cluster['apt_seconds']:.0f} s")
