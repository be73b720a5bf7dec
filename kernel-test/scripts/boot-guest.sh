#!/usr/bin/env bash
# Builds the image (cached) and boots the guest once under a hard timeout, the serial console
# going to WORK/console.log. Exit status is QEMU's (124 when the timeout killed it); the caller
# parses the console for the result markers and shows its tail when they are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
t0=$(date +%s)
eval "$("$here/build-image.sh" | grep -E '^(RELEASE|KERNEL|INITRD|WORK)=')"
t1=$(date +%s)
echo "[boot-guest] image ready in $((t1 - t0)) s: $INITRD" >&2
# TCG, not KVM: /dev/kvm exists on these machines but a KVM guest hangs or QEMU aborts (see the
# notes). Devices: e1000e alone on pcie.0 (own group), virtio-net behind its own root port (own
# group), two e1000 behind one pcie-pci-bridge (one group with the bridge). No option ROMs
# (romfile=): nothing boots from the network, and iPXE's setup costs seconds under TCG.
status=0
timeout --kill-after=10 "${VFIO_FLEET_BOOT_TIMEOUT:-450}" qemu-system-x86_64 \
  -machine q35 -accel tcg -m 1024 -smp 2 -nographic -no-reboot -vga none \
  -device intel-iommu,intremap=on \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append 'console=ttyS0 intel_iommu=on panic=-1 quiet' \
  -nic none \
  -netdev user,id=n0 -netdev user,id=n1 -netdev user,id=n2 -netdev user,id=n3 \
  -device e1000e,netdev=n0,bus=pcie.0,addr=0x3,romfile= \
  -device pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0,addr=0x4 \
  -device virtio-net-pci,netdev=n1,bus=rp1,romfile= \
  -device pcie-pci-bridge,id=br1,bus=pcie.0,addr=0x5 \
  -device e1000,netdev=n2,bus=br1,addr=0x1,romfile= \
  -device e1000,netdev=n3,bus=br1,addr=0x2,romfile= \
  < /dev/null > "$WORK/console.log" 2>&1 || status=$?
echo "[boot-guest] guest ran $(($(date +%s) - t1)) s, qemu exit $status; console: $WORK/console.log" >&2
echo "CONSOLE=$WORK/console.log"
echo "WORK=$WORK"
exit "$status"
