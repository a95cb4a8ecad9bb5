"""Build the power-cut guest: kernel, initramfs and a raw ext4 disk image (not in the repo).

    python bench/powercut/build_image.py [--out /var/tmp/powercut/image] [--source TREE]

``--source`` installs the project from another checkout (e.g. a ``git worktree`` of an
older commit, to show what the bench finds in a store without the seq reservation).

Needs root, Debian's ``qemu-system-x86``, ``busybox-static`` and e2fsprogs, and network
access to the package registries (the kernel .deb via ``apt-get download``, the
project's dependencies as wheels via pip). The root file system is a copy of
/var/cache/reservoir-edge-target/bookworm-amd64 (the cached one is never modified) with
the project installed into /opt/edge from wheels (``pip --no-index --find-links``), a
static busybox, the site config template and the guest's init (``guest_init.sh``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGET_ROOT = Path("/var/cache/reservoir-edge-target/bookworm-amd64")
KERNEL_PACKAGE = "linux-image-cloud-amd64"
MODULES = ("drivers/virtio/virtio_ring", "drivers/virtio/virtio",
           "drivers/virtio/virtio_pci_modern_dev", "drivers/virtio/virtio_pci_legacy_dev",
           "drivers/virtio/virtio_pci", "drivers/block/virtio_blk", "net/core/failover",
           "drivers/net/net_failover", "drivers/net/virtio_net")
IMAGE_MIB = 1536
# The guest reaches the host's private broker through this address (qemu guestfwd).
BROKER_IN_GUEST = ("10.0.2.100", 1883)
STORE_IN_GUEST = "/var/lib/edge/edge.db"
GATEWAY_ID = "gw-cut"
SITE_ID = "powercut"


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=900, **kwargs)  # type: ignore[call-overload]


def site_config() -> dict[str, object]:
    """Four Modbus TCP devices of ten float32 points at 0.25-1 s on two endpoints, and
    threshold rules that cross every storm (the simulator's 120 s period): alarms too."""
    quantities = ("water_level", "other", "seepage_flow", "temperature", "other",
                  "piezometric_level", "other", "displacement", "other", "seepage_pressure")
    intervals = (0.25, 0.5, 1.0, 1.0)
    devices = []
    for d, interval in enumerate(intervals):
        devices.append({
            "id": f"dev-{d}", "bus": f"lan-{d // 2}", "unit": d % 2 + 1,
            "poll_interval_s": interval,
            "points": [{"id": f"p{i}", "quantity": quantities[i], "unit": "m",
                        "register": {"table": "holding", "address": 2 * i, "type": "float32"}}
                       for i in range(10)]})
    rules: list[dict[str, object]] = [
        {"id": "level-high", "type": "threshold", "point": "dev-0/p0",
         "high": [{"severity": "warning", "value": "flood_limit"}]}]
    for d in range(4):  # "other" swings 40..60 each period
        rules.append({"id": f"other-high-{d}", "type": "threshold", "point": f"dev-{d}/p1",
                      "high": [{"severity": "warning", "value": 50.0 + 2 * d}],
                      "hysteresis": 0.5})
    return {
        "site": {"id": SITE_ID, "levels": {"flood_limit": 123.5, "design_flood": 124.8}},
        "gateway": {"id": GATEWAY_ID},
        "mqtt": {"host": BROKER_IN_GUEST[0], "port": BROKER_IN_GUEST[1],
                 "topic_prefix": "reservoir", "keepalive_s": 5},
        "store": {"path": STORE_IN_GUEST, "synchronous": "@SYNC@"},
        "health": {"interval_s": 60},
        "logging": {"level": "warning"},
        "buses": [{"id": f"lan-{b}", "type": "modbus_tcp", "host": "127.0.0.1",
                   "port": 15020 + b, "timeout_s": 1.0} for b in range(2)],
        "devices": devices,
        "rules": rules,
    }


def fetch_kernel(work: Path) -> tuple[Path, Path]:
    """The Debian cloud kernel, extracted (not installed): vmlinuz and its modules dir."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob("linux-image-*-cloud-amd64_*.deb")):
        depends = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], check=True,
                                 capture_output=True, text=True, timeout=60).stdout
        real = next(line.split(":", 1)[1].strip() for line in depends.splitlines()
                    if line.strip().startswith("Depends: linux-image-"))
        run(["apt-get", "download", real], cwd=debs)
    deb = sorted(debs.glob("linux-image-*-cloud-amd64_*.deb"))[-1]
    kernel = work / "kernel"
    if not kernel.exists():
        run(["dpkg-deb", "-x", str(deb), str(kernel)])
    vmlinuz = sorted((kernel / "boot").glob("vmlinuz-*"))[-1]
    modules = sorted((kernel / "lib" / "modules").iterdir())[-1] / "kernel"
    return vmlinuz, modules


def build_initramfs(work: Path, modules: Path) -> Path:
    tree = work / "initramfs"
    shutil.rmtree(tree, ignore_errors=True)
    for sub in ("bin", "modules", "proc", "dev", "newroot"):
        (tree / sub).mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", tree / "bin" / "busybox")
    for module in MODULES:
        shutil.copy2(modules / f"{module}.ko", tree / "modules" / f"{Path(module).name}.ko")
    init = tree / "init"
    shutil.copy2(HERE / "initramfs_init.sh", init)
    init.chmod(0o755)
    out = work / "initramfs.cpio.gz"
    files = subprocess.run(["find", "."], cwd=tree, check=True, capture_output=True,
                           timeout=60).stdout
    cpio = subprocess.run(["busybox", "cpio", "-o", "-H", "newc"], cwd=tree, input=files,
                          check=True, capture_output=True, timeout=120).stdout
    out.write_bytes(subprocess.run(["gzip", "-9"], input=cpio, check=True,
                                   capture_output=True, timeout=120).stdout)
    return out


def build_root(work: Path, wheels: Path) -> Path:
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    run(["cp", "-a", str(TARGET_ROOT), str(root)])
    shutil.copytree(wheels, root / "tmp" / "wheels")
    run(["chroot", str(root), "python3", "-m", "venv", "/opt/edge"])
    run(["chroot", str(root), "/opt/edge/bin/pip", "install", "-q", "--no-index",
         "--find-links", "/tmp/wheels", "reservoir-edge"])
    shutil.rmtree(root / "tmp" / "wheels")
    (root / "powercut").mkdir()
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "powercut" / "busybox")
    init = root / "powercut" / "init.sh"
    shutil.copy2(HERE / "guest_init.sh", init)
    init.chmod(0o755)
    (root / "powercut" / "site.yaml.in").write_text(yaml.safe_dump(site_config(),
                                                                   sort_keys=False))
    Path(root, STORE_IN_GUEST).parent.mkdir(parents=True, exist_ok=True)
    return root


def build_wheels(work: Path, source: Path) -> Path:
    """The project and its dependencies as CPython 3.11 manylinux wheels (bookworm's)."""
    wheels = work / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)])
    project = next(wheels.glob("reservoir_edge-*.whl"))
    run([*pip, "download", "-q", "-d", str(wheels), "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux_2_28_x86_64", str(project)])
    return wheels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/var/tmp/powercut/image"))
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the checkout to install into the guest (default: this one)")
    args = parser.parse_args()
    work: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    vmlinuz, modules = fetch_kernel(work)
    initramfs = build_initramfs(work, modules)
    root = build_root(work, build_wheels(work, args.source))
    image = work / "disk.raw"
    image.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "powercut", "-d", str(root), str(image),
         f"{IMAGE_MIB}M"])
    shutil.rmtree(root)
    shutil.copy2(vmlinuz, work / "vmlinuz")
    print(f"kernel {work / 'vmlinuz'}\ninitramfs {initramfs}\ndisk {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
