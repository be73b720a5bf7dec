#!/bin/sh
# modprobe for the guest: the agent runs `modprobe MODULE` on a real host, and busybox's modprobe
# is not kmod's. This one resolves the name through modules.dep the way kmod does (`-` and `_` are
# the same, dependencies first, an already loaded module is done) and insmods the files, so a
# missing .ko fails exactly where a real modprobe would: before anything is inserted.
dep="/lib/modules/$(uname -r)/modules.dep"
load() {
  local name pat line path d
  name=$(echo "$1" | tr - _)
  [ -d "/sys/module/$name" ] && return 0
  pat=$(echo "$name" | sed 's/_/[-_]/g')
  line=$(grep -E "(^|/)$pat\.ko(\.[a-z]+)?:" "$dep")
  if [ -z "$line" ]; then
    echo "modprobe: FATAL: Module $1 not found in directory /lib/modules/$(uname -r)" >&2
    return 1
  fi
  path=${line%%:*}
  for d in ${line#*:}; do
    d=${d##*/}
    load "${d%%.ko*}" || return 1
  done
  [ -d "/sys/module/$name" ] && return 0
  if [ ! -f "/lib/modules/$(uname -r)/$path" ]; then
    echo "modprobe: FATAL: Module $1 not found in directory /lib/modules/$(uname -r)" >&2
    return 1
  fi
  insmod "/lib/modules/$(uname -r)/$path" || {
    echo "modprobe: ERROR: could not insert '$name'" >&2
    return 1
  }
}
[ "$1" = "-q" ] && shift
[ $# -ge 1 ] || { echo "usage: modprobe MODULE" >&2; exit 1; }
load "$1"
