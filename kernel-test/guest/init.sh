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
poweroff -f
