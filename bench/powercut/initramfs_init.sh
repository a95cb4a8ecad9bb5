#!/bin/busybox sh
# The initramfs of the power-cut guest: load the virtio modules the Debian cloud kernel
# builds as modules, mount the ext4 disk and hand over to its init (bench/powercut).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         virtio_blk failover net_failover virtio_net; do
  /bin/busybox insmod /modules/$m.ko || echo "initramfs: insmod $m failed"
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do /bin/busybox sleep 0.1; n=$((n + 1)); done
/bin/busybox mkdir -p /newroot
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || echo "initramfs: mount failed"
/bin/busybox umount /proc
/bin/busybox umount /dev
exec /bin/busybox switch_root /newroot /powercut/init.sh
