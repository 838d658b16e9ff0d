"""What the emulated checks share: QEMU's EPYC-Milan (a Zen 3: AVX2 and FMA, no AVX-512, no
VNNI) as a command prefix, ONNX Runtime's library named outright (each run gets a cache folder of
its own, because QEMU shows the host's /proc/cpuinfo, which names the optimised graphs' entries),
and running a command with the emulator's warnings left out of a failure's report."""
import os, subprocess, sys

ZEN3 = ["qemu-x86_64", "-cpu", "EPYC-Milan"]
ORT = os.environ.get("ORT_DYLIB_PATH") or subprocess.run(
    ["scripts/setup/ort.sh"], capture_output=True, text=True, check=True).stdout.split()[-1]


def run(cmd, env=None):
    """`cmd`'s standard error once it succeeded; a failure stops the check, naming `cmd`."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        said = "\n".join(l for l in out.stderr.splitlines() if "TCG doesn't support" not in l)
        check = os.path.basename(sys.argv[0])
        sys.exit(f"{check}: {' '.join(cmd)} failed ({out.returncode}):\n{said[-2000:]}")
    return out.stderr


def env(work, tag, **more):
    """The environment of run `tag`: its own graph cache under `work`, ONNX Runtime named."""
    return dict(os.environ, FC7_CACHE=f"{work}/cache-{tag}", ORT_DYLIB_PATH=ORT, **more)
