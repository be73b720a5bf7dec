#!/usr/bin/env bash
# Builds what the real-kernel test boots: a Debian kernel, its modules and an initramfs with
# busybox, this machine's node and the agent bundle. Everything slow (apt installs, the 70 MB kernel
# download, depmod, packing node's 40 MB) is cached outside the repository, keyed by the kernel
# package's version, so only the small per-run overlay (agent bundle, guest script, /init) is
# rebuilt each time. Prints KERNEL=, INITRD= and OVERLAY= lines for the caller.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${VFIO_FLEET_KERNEL_CACHE:-/var/cache/vfio-fleet/kernel-test}"
# The kernel linux-image-amd64 depends on now: a pinned ABI name (linux-image-6.1.0-56-amd64) would
# vanish from the mirror at the next security ABI bump and break CI.
kernel_of_meta() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kpkg="${VFIO_FLEET_KERNEL_PACKAGE:-$(kernel_of_meta)}"
if [ -z "$kpkg" ]; then
  apt-get update -qq >&2
  kpkg="$(kernel_of_meta)"
fi
kpkg="${kpkg:-linux-image-6.1.0-56-amd64}"
t0=$(date +%s)
say() { printf '[build-image +%ss] %s\n' "$(($(date +%s) - t0))" "$*" >&2; }

# --- host tools -------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# Only a static busybox runs in the initramfs without its libc (Debian's plain busybox is dynamic).
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then need+=(busybox-static); fi
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null && command -v kmod >/dev/null || need+=(kmod)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
# systemd as the guest's PID 1 for the sandbox part (its binaries are copied, not run, here).
[ -x /lib/systemd/systemd ] && command -v systemctl >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# --- kernel -----------------------------------------------------------------------------------
version="$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  # An old package list may not know the package yet.
  apt-get update -qq >&2
  version="$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')"
fi
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "build-image: apt has no candidate for $kpkg" >&2; exit 1
fi
key="$kpkg-$version"
kdir="$cache/$key"
mkdir -p "$kdir"
if [ ! -f "$kdir/kernel.done" ]; then
  say "downloading $kpkg $version"
  rm -rf "$kdir/deb" "$kdir/root"
  mkdir -p "$kdir/deb" "$kdir/root"
  (cd "$kdir/deb" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$version" >&2)
  dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root"
  rm -rf "$kdir/deb"
  touch "$kdir/kernel.done"
fi
# lspci for the guest (the scan is checked against it as well as against sysfs), unpacked into the
# cache rather than installed: the host's own environment stays as it was.
pcidir="$kdir/pciutils"
if [ ! -x "$pcidir/usr/bin/lspci" ]; then
  say "downloading pciutils"
  rm -rf "$pcidir" "$kdir/pci-deb"
  mkdir -p "$pcidir" "$kdir/pci-deb"
  (cd "$kdir/pci-deb" && apt-get download -qq -o APT::Sandbox::User=root pciutils libpci3 >&2)
  for deb in "$kdir"/pci-deb/*.deb; do dpkg-deb -x "$deb" "$pcidir"; done
  rm -rf "$kdir/pci-deb"
fi
release="$(ls "$kdir/root/lib/modules" | head -n 1)"
mods="$kdir/root/lib/modules/$release"
if [ ! -f "$mods/modules.dep" ]; then
  # The package ships no modules.dep; the guest's modprobe (and the agent, through it) needs one.
  say "depmod $release"
  depmod -b "$kdir/root" "$release"
fi
cp "$kdir/root/boot/vmlinuz-$release" "$kdir/vmlinuz"

# --- initramfs base: busybox, modules, node ----------------------------------------------------
base="$kdir/base.cpio.gz"
# Rebuilt when this script's text changes (not its mtime: a checkout older than the cache would
# otherwise keep a base built by another version of it) or a binary it packs is newer.
recipe="$(sha256sum "$here/scripts/build-image.sh" | cut -d' ' -f1)"
if [ ! -f "$base" ] || [ "$(cat "$base.recipe" 2>/dev/null)" != "$recipe" ] ||
  [ /usr/bin/node -nt "$base" ] || [ /lib/systemd/systemd -nt "$base" ]; then
  say "building the initramfs base"
  stage="$kdir/stage"
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,sbin,proc,sys,dev,tmp,etc,usr/bin,lib/modules/"$release"}
  cp /bin/busybox "$stage/bin/busybox"
  for applet in $(/bin/busybox --list); do
    case "$applet" in
      # kmod's own tools below: busybox's modprobe ignores softdeps, so `modprobe vfio_pci` would
      # leave vfio_iommu_type1 out and no container could get an IOMMU backend.
      busybox | modprobe | insmod | rmmod | lsmod | depmod | modinfo) continue ;;
    esac
    ln -sf busybox "$stage/bin/$applet"
  done
  kmod_bin="$(command -v kmod)"
  cp -L "$kmod_bin" "$stage/bin/kmod"
  for tool in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf ../bin/kmod "$stage/sbin/$tool"; done
  # The modules the scenarios need and, through modules.dep, everything they depend on.
  wanted="irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio_pci_core vfio_pci e1000e e1000 virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"
  : > "$stage/lib/modules/$release/modules.dep"
  declare -A seen=()
  queue=()
  for m in $wanted; do
    pat="$(echo "$m" | sed 's/[-_]/[-_]/g')"
    line="$(grep -E "(^|/)$pat\\.ko(\\.[a-z]+)?:" "$mods/modules.dep" || true)"
    [ -n "$line" ] || { say "module $m is not in modules.dep (built in?)"; continue; }
    queue+=("${line%%:*}")
  done
  while [ ${#queue[@]} -gt 0 ]; do
    p="${queue[0]}"; queue=("${queue[@]:1}")
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    mkdir -p "$stage/lib/modules/$release/$(dirname "$p")"
    cp "$mods/$p" "$stage/lib/modules/$release/$p"
    line="$(grep -E "^$p:" "$mods/modules.dep")"
    echo "$line" >> "$stage/lib/modules/$release/modules.dep"
    for d in ${line#*:}; do queue+=("$d"); done
  done
  for f in modules.builtin modules.builtin.modinfo modules.order; do
    [ -f "$mods/$f" ] && cp "$mods/$f" "$stage/lib/modules/$release/$f"
  done
  # kmod reads the binary indexes (modules.dep.bin, modules.softdep...): depmod writes them for the
  # modules the image holds. modules.alias then becomes the full kernel's again, as on a real host
  # (the agent matches vfio variants against it; kmod uses modules.alias.bin).
  depmod -b "$stage" "$release"
  cp "$mods/modules.alias" "$stage/lib/modules/$release/modules.alias"
  # node and lspci with the shared libraries they link, at their usual paths (libpci from the
  # unpacked package, the rest from this machine).
  cp /usr/bin/node "$stage/usr/bin/node"
  cp "$pcidir/usr/bin/lspci" "$stage/usr/bin/lspci"
  (cd "$pcidir" && find . -name 'libpci.so*' -print0 | cpio --null -pdm --quiet "$stage")
  pcilibs="$(find "$pcidir" -name 'libpci.so*' -printf '%h\n' | sort -u | paste -sd:)"
  for lib in $( (ldd /usr/bin/node; ldd "$kmod_bin"; LD_LIBRARY_PATH="$pcilibs" ldd "$pcidir/usr/bin/lspci") |
    awk '/=>/ {print $3} /^\s*\/lib/ {print $1}' | grep -v "^$pcidir" | sort -u); do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
  mkdir -p "$stage/lib64"
  cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
  # systemd 252 (Debian 12's) for the sandbox part: PID 1 and systemctl with their libraries and
  # os-release; no unit files (-.slice and system.slice are built in, the test brings its own). No
  # journald, udevd or dbus: systemctl talks to PID 1 over its private socket, the units log to
  # files.
  mkdir -p "$stage/lib/systemd/system" "$stage/bin" "$stage/etc/systemd/system" \
    "$stage/var/lib" "$stage/var/tmp" "$stage/run"
  cp -L /lib/systemd/systemd "$stage/lib/systemd/systemd"
  cp -L "$(command -v systemctl)" "$stage/bin/systemctl"
  cp -L /etc/os-release "$stage/etc/os-release"
  for lib in $( (ldd /lib/systemd/systemd; ldd "$(command -v systemctl)") |
    awk '/=>/ {print $3}' | sort -u); do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$base.tmp"
  mv "$base.tmp" "$base"
  echo "$recipe" > "$base.recipe"
  rm -rf "$stage"
fi

# --- per-run overlay: agent bundle, guest scenario, /init --------------------------------------
bundle="$repo/apps/agent/dist/vfio-fleet-agent.mjs"
if [ ! -f "$bundle" ]; then
  say "building the agent bundle"
  node "$repo/apps/agent/build.mjs" >&2
fi
work="${VFIO_FLEET_KERNEL_WORK:-$(mktemp -d /tmp/kernel-test.XXXXXX)}"
mkdir -p "$work/overlay/kt" "$work/overlay/sbin"
cp "$bundle" "$work/overlay/kt/vfio-fleet-agent.mjs"
[ -f "$bundle.map" ] && cp "$bundle.map" "$work/overlay/kt/vfio-fleet-agent.mjs.map"
cp "$here/guest/scenario.mjs" "$here/guest/sandbox.mjs" "$here/guest/view.mjs" "$work/overlay/kt/"
# The unit under test, exactly as the Debian package installs it.
cp "$repo/packaging/systemd/vfio-fleet-agent.service" "$work/overlay/kt/vfio-fleet-agent.service"
mkdir -p "$work/overlay/etc/systemd/system"
cp "$here/guest/kt-sandbox.service" "$work/overlay/etc/systemd/system/kt-sandbox.service"
cp "$here/guest/init.sh" "$work/overlay/init"
# The holder (a VM's grip on a device, without a VM): static, so it needs nothing of the image.
gcc -static -O2 -Wall -o "$work/overlay/kt/vfio-hold" "$here/guest/vfio-hold.c"
chmod 755 "$work/overlay/init"
(cd "$work/overlay" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$work/overlay.cpio.gz"
# The kernel unpacks concatenated archives in order, so the overlay lands on top of the base.
cat "$base" "$work/overlay.cpio.gz" > "$work/initrd"
say "ready ($release)"
echo "RELEASE=$release"
echo "KERNEL=$kdir/vmlinuz"
echo "INITRD=$work/initrd"
echo "WORK=$work"
