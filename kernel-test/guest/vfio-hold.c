// A VM's grip on a device, without the VM: opens the IOMMU group, gives it a type1 container and
// takes a device fd, as QEMU does, then holds it until SIGTERM. Neither node (no ioctl) nor
// busybox can do that. Static (gcc -static), so it runs in the guest's initramfs without a libc.
//
//   vfio-hold [-name guest=NAME,...] [--anon] GROUP BDF
//
// `-name` is accepted and ignored so the command line reads like QEMU's (the agent names the VM
// from it). `--anon` closes the group and container fds once the device fd is taken: only
// `anon_inode:[vfio-device]` is left in /proc/<pid>/fd. Prints `held <pid>` once the device fd is
// open, or `error: ...` and exits 1.
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int fail(const char *what) {
  printf("error: %s: %s\n", what, strerror(errno));
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  const char *group_arg = NULL;
  const char *bdf = NULL;
  int anon = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-name") == 0 && i + 1 < argc) {
      i++;
    } else if (strcmp(argv[i], "--anon") == 0) {
      anon = 1;
    } else if (group_arg == NULL) {
      group_arg = argv[i];
    } else if (bdf == NULL) {
      bdf = argv[i];
    }
  }
  if (group_arg == NULL || bdf == NULL) {
    printf("error: usage: vfio-hold [-name guest=NAME] [--anon] GROUP BDF\n");
    return 2;
  }
  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) return fail("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) return fail("VFIO_GET_API_VERSION");
  char path[64];
  snprintf(path, sizeof path, "/dev/vfio/%s", group_arg);
  int group = open(path, O_RDWR);
  if (group < 0) return fail(path);
  struct vfio_group_status status = {.argsz = sizeof status};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0) return fail("VFIO_GROUP_GET_STATUS");
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    errno = EBUSY;
    return fail("group not viable");
  }
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) return fail("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0) return fail("VFIO_SET_IOMMU");
  int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (device < 0) return fail("VFIO_GROUP_GET_DEVICE_FD");
  if (anon) {
    close(group);
    close(container);
  }
  printf("held %d\n", (int)getpid());
  fflush(stdout);
  // SIGTERM's default action ends the process; the kernel then releases the device.
  for (;;) pause();
}
