#!/powercut/busybox sh
# PID 1 of the power-cut guest (bench/powercut): brings up the network, writes the site
# config for the `synchronous` setting named on the kernel command line, starts
# `edge simulate` and `edge run`. With powercut.stop=serial it stops the gateway cleanly
# when the host writes a line to the second serial port (SIGTERM: the store trims its
# reservation), syncs and powers off; without it, it runs until the host kills the
# virtual machine (the power cut).
B=/powercut/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev 2>/dev/null
$B mount -t tmpfs tmp /tmp
$B mount -t tmpfs run /run
$B hostname powercut
$B ip link set lo up
$B ip addr add 10.0.2.15/24 dev eth0
$B ip link set eth0 up
$B ip route add default via 10.0.2.2
SYNC=full
STOP=
for word in $($B cat /proc/cmdline); do
  case "$word" in
    powercut.sync=*) SYNC=${word#powercut.sync=} ;;
    powercut.stop=*) STOP=${word#powercut.stop=} ;;
  esac
done
$B sed "s/@SYNC@/$SYNC/" /powercut/site.yaml.in > /run/site.yaml
echo "POWERCUT_BOOT sync=$SYNC stop=$STOP boot_id=$($B cat /proc/sys/kernel/random/boot_id)"
export HOME=/root PATH=/opt/edge/bin:/usr/bin:/bin:/usr/sbin:/sbin
/opt/edge/bin/edge simulate -c /run/site.yaml --log-level warning > /dev/console 2>&1 &
SIM=$!
$B sleep 2
/opt/edge/bin/edge run -c /run/site.yaml > /dev/console 2>&1 &
RUN=$!
echo "POWERCUT_STARTED"
if [ -n "$STOP" ]; then
  read -r line < /dev/ttyS1
  echo "POWERCUT_STOP_ASKED $line"
  kill -TERM $RUN
  wait $RUN
  echo "POWERCUT_EDGE_STOPPED rc=$?"
  kill -TERM $SIM
  wait $SIM
  $B sync
  $B mount -o remount,ro /
  echo "POWERCUT_POWEROFF"
  $B poweroff -f
fi
while true; do $B sleep 3600; done
