#!/bin/sh
# The guest's PID 1: mount the kernel's filesystems, load the NIC drivers (vfio is left to the
# agent's own `modprobe vfio_pci`), run the scenario, print its result between markers on the
# serial console, power off. Any failure still reaches the markers, so the host never waits on a
# silent guest until its timeout.
export PATH=/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Only emergencies on the console: kernel lines would otherwise split the result lines.
echo 1 > /proc/sys/kernel/printk
for m in e1000e e1000 virtio_pci virtio_net; do modprobe "$m" || echo "KT-INIT: modprobe $m failed"; done
ip link set lo up 2>/dev/null
echo "KT-INIT: running scenario"
node /kt/scenario.mjs > /tmp/result.json 2> /tmp/scenario.err
echo "KT-INIT: scenario exit $?"
tail -n 40 /tmp/scenario.err
echo "===KT-RESULT-BEGIN==="
base64 /tmp/result.json
echo "===KT-RESULT-END==="
sync
# Second part: the same kernel under systemd, for the packaged unit's sandbox (sandbox.mjs).
# systemd's mount namespaces need a root it can pivot away from, which the initramfs (rootfs) is
# not: copy the tree into a tmpfs and switch_root there, systemd becoming PID 1.
if [ -x /lib/systemd/systemd ] && [ -f /kt/sandbox.mjs ]; then
  echo "KT-INIT: switching to systemd"
  mkdir -p /newroot
  mount -t tmpfs -o mode=0755 tmpfs /newroot
  for d in bin sbin lib lib64 usr etc kt var; do cp -a "/$d" /newroot/; done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
  chmod 1777 /newroot/tmp
  umount /tmp
  for m in proc sys dev; do mount --move "/$m" "/newroot/$m"; done
  exec switch_root /newroot /lib/systemd/systemd --unit=kt-sandbox.service \
    --show-status=false --log-target=console --log-level=warning
  echo "KT-INIT: switch_root failed"
fi
poweroff -f
