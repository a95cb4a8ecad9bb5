"""Power cuts in a virtual machine: what each ``store.synchronous`` setting costs.

    python bench/powercut/build_image.py            # once: kernel, initramfs, disk image
    python bench/powercut/powercut.py --setting normal --cuts 10
    python bench/powercut/powercut.py --setting full --cuts 10

A process kill does not test durability: the kernel keeps what the process wrote. Here
the gateway runs in a qemu guest whose disk is a raw ext4 image on the host opened with
``cache=none,aio=native`` (O_DIRECT: the host keeps nothing in its page cache), so what the
guest had not flushed when qemu is SIGKILLed is really gone, as in a power cut.

The guest (``guest_init.sh``, PID 1) runs ``edge simulate`` (four Modbus TCP devices of
ten points at 0.25-1 s on two endpoints, five threshold rules that cross every simulated
storm) and ``edge run``. Its broker is a private mosquitto on a free loopback port of the
host, reached only through qemu's user network with ``restrict=on`` and one ``guestfwd``
(10.0.2.100:1883 in the guest); never the host's own broker. A subscriber on the host is
the platform: it keeps every (seq, content digest) it receives across all boots
(``platform.jsonl``).

Each cut: boot; once the platform has the boot's first message, run a random 20-60 s;
SIGKILL qemu (the power cut); boot again, and 20 s after the platform has that boot's
first message write a line to the guest's second serial port (a unix socket on the
host): the guest stops the gateway with SIGTERM (a clean stop), syncs and powers off.
After the last cut the store is read out of the image (``debugfs``, the image is not
mounted) and ``count.py`` counts: seqs received twice with different content (the
failure: a de-duplicating platform drops the second), seqs never received (and how many
of them lie in ranges the store announced skipping), readings and alarms the platform
has that the store lost. Every step has a timeout; qemu and the broker are always
killed on exit (SIGTERM and Ctrl-C included). ``--accel kvm`` where nested
virtualisation works: on the 2-core development machine the guest hangs in early boot
under KVM (its CPU shows no vmx), so the default is TCG, which only makes the guest
slower; the disk's O_DIRECT semantics are the same. Images and logs go under
/var/tmp/powercut, never into the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import paho.mqtt.client as mqtt  # noqa: E402
from _common import Broker, machine  # noqa: E402
from build_image import GATEWAY_ID, SITE_ID, STORE_IN_GUEST  # noqa: E402
from count import SEQ_KINDS, count, digest, read_platform_log, skips_from_console  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge.history import PARTS  # noqa: E402

ROOT = f"reservoir/{SITE_ID}/{GATEWAY_ID}"
BOOT_TIMEOUT_S = 240.0  # boot to the first message (TCG on a busy 2-core host is slow)
AFTER_CUT_S = 20.0  # publishing after the reboot before the clean stop
CLEAN_STOP_TIMEOUT_S = 240.0


class Platform:
    """The host-side subscriber: every seq'd message it receives, as a JSON line."""

    def __init__(self, port: int, log: Path) -> None:
        self.boot = 0
        self.received_in_boot = 0
        self._log = log.open("a")
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="powercut-platform")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{ROOT}/+", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[1]
        if kind not in SEQ_KINDS:
            return
        seq, content, readings = digest(msg.payload)
        replay = b'"replay":true' in msg.payload
        with self._lock:
            self._log.write(json.dumps({"boot": self.boot, "kind": kind, "seq": seq,
                                        "digest": content, "readings": readings,
                                        "replay": replay, "t": time.time()}) + "\n")
            self._log.flush()
            self.received_in_boot += 1

    def next_boot(self) -> None:
        with self._lock:
            self.boot += 1
            self.received_in_boot = 0

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self._log.close()


def qemu_command(image: Path, disk: Path, accel: str, broker_port: int, console: Path,
                 cmdline: str, control: Path) -> list[str]:
    return ["qemu-system-x86_64", "-accel", accel, "-m", "768", "-smp", "1",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initramfs.cpio.gz"),
            "-append", f"console=ttyS0 panic=-1 {cmdline}",
            # O_DIRECT: the host page cache keeps nothing the guest has not flushed.
            "-drive", f"file={disk},format=raw,if=virtio,cache=none,aio=native",
            "-netdev", "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:1883-"
                       f"tcp:127.0.0.1:{broker_port}",
            "-device", "virtio-net-pci,netdev=n0", "-serial", f"file:{console}",
            # ttyS1: the host asks for a clean stop with a line here.
            "-chardev", f"socket,id=ctl,path={control},server=on,wait=off",
            "-serial", "chardev:ctl"]


class Guest:
    """One boot of the virtual machine; killed (never left running) on every exit path."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.proc = subprocess.Popen(command, stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def power_cut(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def ask_stop(self, control: Path) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctl:
            ctl.settimeout(10)
            ctl.connect(str(control))
            ctl.sendall(b"stop\n")
            time.sleep(1)  # let qemu pass it on before the socket closes

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


def wait_first_message(platform: Platform, guest: Guest, timeout: float) -> float:
    """Seconds from boot to the platform's first message of this boot."""
    start = time.monotonic()
    while platform.received_in_boot == 0:
        if guest.proc.poll() is not None:
            raise RuntimeError(f"qemu exited ({guest.proc.returncode}) before any message")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no message {timeout:.0f} s after boot")
        time.sleep(0.2)
    return time.monotonic() - start


def one_cut(n: int, run: Path, args: argparse.Namespace, platform: Platform,
            broker_port: int, rng: random.Random) -> dict[str, object]:
    disk = run / "disk.raw"
    control = run / "ctl.sock"
    cut: dict[str, object] = {"cut": n}
    console = run / f"console-{n:02d}-cut.log"
    platform.next_boot()
    guest = Guest(qemu_command(args.image, disk, args.accel, broker_port, console,
                               f"powercut.sync={args.setting}", control), run / "qemu.log")
    control.unlink(missing_ok=True)
    try:
        cut["boot_s"] = round(wait_first_message(platform, guest, BOOT_TIMEOUT_S), 1)
        cut["ran_s"] = rng.randint(20, 60)
        time.sleep(float(cut["ran_s"]))  # type: ignore[arg-type]
        cut["received_before_cut"] = platform.received_in_boot
    finally:
        guest.power_cut()
    console = run / f"console-{n:02d}-after.log"
    platform.next_boot()
    guest = Guest(qemu_command(args.image, disk, args.accel, broker_port, console,
                               f"powercut.sync={args.setting} powercut.stop=serial", control),
                  run / "qemu.log")
    try:
        cut["reboot_s"] = round(wait_first_message(platform, guest, BOOT_TIMEOUT_S), 1)
        time.sleep(AFTER_CUT_S)
        guest.ask_stop(control)
        cut["clean_stop"] = guest.wait(CLEAN_STOP_TIMEOUT_S)
    finally:
        guest.power_cut()
    text = console.read_text(errors="replace")
    cut["received_after"] = platform.received_in_boot
    cut["skips"] = skips_from_console(text)
    cut["edge_stopped"] = "POWERCUT_EDGE_STOPPED rc=0" in text
    return cut


def store_seqs(disk: Path, scratch: Path) -> tuple[set[int], set[int]]:
    """Telemetry and alarm seqs in the guest's store, read out of the unmounted image."""
    scratch.mkdir(exist_ok=True)
    for suffix in ("", "-wal"):
        target = scratch / f"edge.db{suffix}"
        target.unlink(missing_ok=True)
        subprocess.run(["debugfs", "-R", f"dump {STORE_IN_GUEST}{suffix} {target}", str(disk)],
                       check=True, capture_output=True, timeout=120)
        if target.exists() and target.stat().st_size == 0:
            target.unlink()
    conn = sqlite3.connect(scratch / "edge.db")
    try:
        telemetry = {int(r[0]) // PARTS for r in conn.execute("SELECT id FROM telemetry")}
        alarms = {int(r[0]) for r in conn.execute("SELECT seq FROM alarm_events")}
    finally:
        conn.close()
    return telemetry, alarms


def run_cuts(args: argparse.Namespace, run: Path) -> list[dict[str, object]]:
    rng = random.Random(args.seed)
    subprocess.run(["cp", "--sparse=always", str(args.image / "disk.raw"), str(run / "disk.raw")],
                   check=True, timeout=300)
    broker = Broker(run)
    broker.start()
    platform = None
    cuts: list[dict[str, object]] = []
    try:
        platform = Platform(broker.port, run / "platform.jsonl")
        for n in range(1, args.cuts + 1):
            cuts.append(one_cut(n, run, args, platform, broker.port, rng))
            print(json.dumps(cuts[-1]), flush=True)
            (run / "cuts.json").write_text(json.dumps(cuts, indent=1))
            if time.monotonic() > args.deadline:
                print(f"stopping after {n} cuts: --minutes reached", flush=True)
                break
    finally:
        if platform is not None:
            platform.close()
        broker.stop()
    return cuts


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so every finally kills qemu and the broker


def main() -> int:
    signal.signal(signal.SIGTERM, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("full", "normal"), required=True)
    parser.add_argument("--cuts", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="start no new cut after this long")
    parser.add_argument("--accel", choices=("kvm", "tcg"), default="tcg",
                        help="kvm where nested virtualisation works (it does not here)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--image", type=Path, default=Path("/var/tmp/powercut/image"))
    parser.add_argument("--out", type=Path, default=Path("/var/tmp/powercut/runs"))
    args = parser.parse_args()
    args.deadline = time.monotonic() + args.minutes * 60
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run = args.out / f"{args.setting}-{stamp}"
    run.mkdir(parents=True)
    cuts = run_cuts(args, run)
    telemetry, alarms = store_seqs(run / "disk.raw", run / "store")
    skips = [tuple(s) for c in cuts for s in c["skips"]]  # type: ignore[attr-defined]
    counts = count(read_platform_log(run / "platform.jsonl"), telemetry, alarms, skips)
    summary = {"setting": args.setting, "cuts": len(cuts), "accel": args.accel,
               "date": stamp, "machine": machine(),
               "clean_stops": sum(bool(c["clean_stop"]) for c in cuts),
               "counts": counts.as_dict()}
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    with contextlib.suppress(OSError):
        (run / "disk.raw").unlink()  # 1.5 GiB; the store copy under store/ stays
    return 0


if __name__ == "__main__":
    sys.exit(main())
