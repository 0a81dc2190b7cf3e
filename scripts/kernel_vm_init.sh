#!/bin/sh
# PID 1 of the guest that scripts/kernel_vm boots. Not meant to be run by hand.
#
# Stage 1 runs from the harness's tiny initramfs under busybox: load the 9p/overlay
# modules, mount the host's root filesystem (virtio-9p, read-only) under a tmpfs overlay
# so the guest may write anywhere without touching the host, copy this script into the new
# root and switch to it. Stage 2 runs from that root with the host's own tools: mount
# proc/sys/dev/tracefs/debugfs/bpffs/securityfs and a fresh tmpfs on /run, bring up lo, run the
# job (/run/kernel-vm/cmd, a bash script the harness wrote) with stdout on hvc0 and stderr
# on hvc1, write its exit status to /run/kernel-vm/status and power off.
#
# Plain POSIX sh: stage 1 runs under busybox ash, stage 2 under the host's /bin/sh.
# Whatever goes wrong, PID 1 ends by powering off (or exiting, which panics the kernel;
# the harness boots it with panic=-1 and qemu -no-reboot), so qemu never lingers.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

say() { echo "kernel_vm init: $*" >/dev/console 2>/dev/null || echo "kernel_vm init: $*"; }

power_off() {
    sync
    echo o >/proc/sysrq-trigger 2>/dev/null
    sleep 10
    exit 1 # panic -> reboot -> qemu exits (-no-reboot)
}

die() {
    say "FATAL: $*"
    power_off
}

cmdline_value() { # value of key=VALUE on the kernel command line
    # shellcheck disable=SC2013 # words, not lines
    for word in $(cat /proc/cmdline); do
        case "$word" in "$1="*) echo "${word#*=}" ;; esac
    done
}

stage1() {
    /bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
    /bin/busybox --install -s
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    exec </dev/console >/dev/console 2>&1
    while read -r module; do
        insmod "/modules/$module" || die "insmod $module failed"
    done </modules/order
    mkdir -p /lower /rw /newroot
    msize=$(cmdline_value kernel_vm.msize)
    mount -t 9p -o "ro,trans=virtio,version=9p2000.L,cache=loose,msize=${msize:-512000}" \
        hostroot /lower || die "cannot mount the host root (9p tag hostroot)"
    mount -t tmpfs -o mode=0755 kernel-vm-rw /rw
    mkdir -p /rw/upper /rw/work
    if ! mount -t overlay -o "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work,index=off,xino=off,metacopy=off,redirect_dir=off" \
        overlay /newroot; then
        say "overlayfs over 9p failed: the guest root stays read-only (tmpfs on /tmp /run /var/tmp only)"
        mount -o bind /lower /newroot || die "cannot bind the host root"
        read_only_root=1
    fi
    [ -x /newroot/bin/sh ] || die "the host root has no /bin/sh"
    # The script for stage 2 lives in the new root's tmpfs /dev (moved there below), so
    # it does not matter whether the root is writable.
    mount -o move /dev /newroot/dev || die "cannot move /dev"
    cp /init /newroot/dev/.kernel_vm_init
    [ -z "${read_only_root:-}" ] || : >/newroot/dev/.kernel_vm_read_only_root
    umount /proc /sys 2>/dev/null
    exec switch_root /newroot /bin/sh /dev/.kernel_vm_init stage2
}

stage2() {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    exec </dev/console >/dev/console 2>&1
    mkdir -p /dev/pts /dev/shm
    mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
    mount -t tmpfs -o mode=1777 shm /dev/shm
    # /tmp and /var/tmp are writable through the overlay (writes stay in guest RAM) and keep
    # showing the host's files: a checkout or venv living there (CI clones) must stay
    # reachable. Only a read-only root needs fresh tmpfs there.
    if [ -e /dev/.kernel_vm_read_only_root ]; then
        for dir in /tmp /var/tmp /root; do mount -t tmpfs -o mode=1777 tmpfs "$dir"; done
    fi
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount -t tracefs tracefs /sys/kernel/tracing || say "tracefs mount failed"
    mount -t debugfs debugfs /sys/kernel/debug || say "debugfs mount failed"
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    mkdir -p /run/kernel-vm
    mount -t 9p -o trans=virtio,version=9p2000.L,cache=none job /run/kernel-vm ||
        die "cannot mount the job directory (9p tag job)"
    hostname kernel-vm 2>/dev/null
    ip link set lo up || ifconfig lo 127.0.0.1 up || say "cannot bring up lo"
    share=$(cmdline_value kernel_vm.share)
    if [ -n "$share" ]; then
        mkdir -p "$share"
        mount -t 9p -o trans=virtio,version=9p2000.L,cache=none share "$share" ||
            die "cannot mount the shared directory $share (9p tag share)"
    fi
    if [ -n "$(cmdline_value kernel_vm.nic)" ]; then
        # The virtio-net NIC on qemu's user network: static address, no DHCP client needed.
        modprobe virtio_net || die "cannot load virtio_net"
        nic=""
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            for dev in /sys/class/net/*; do
                [ "$(basename "$(readlink -f "$dev/device/driver" 2>/dev/null)")" = virtio_net ] &&
                    nic=$(basename "$dev")
            done
            [ -n "$nic" ] && break
            sleep 0.1
        done
        [ -n "$nic" ] || die "no virtio_net interface appeared"
        ip link set "$nic" up &&
            ip addr add 10.0.2.15/24 dev "$nic" &&
            ip route add default via 10.0.2.2 dev "$nic" ||
            die "cannot configure $nic"
    fi
    ln -sf /proc/self/fd /dev/fd 2>/dev/null
    for tty in /dev/hvc0 /dev/hvc1; do
        [ -c "$tty" ] || die "$tty is missing (virtconsole)"
        stty -F "$tty" raw -echo 2>/dev/null
    done
    limit=$(cmdline_value kernel_vm.timeout)
    echo booted >/run/kernel-vm/booted
    env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 TERM="$(cmdline_value kernel_vm.term)" \
        timeout -k 5 "${limit:-600}" /bin/bash /run/kernel-vm/cmd \
        </dev/null >/dev/hvc0 2>/dev/hvc1
    status=$?
    echo "$status" >/run/kernel-vm/status.tmp && mv /run/kernel-vm/status.tmp /run/kernel-vm/status
    umount /run/kernel-vm 2>/dev/null
    power_off
}

case "${1:-stage1}" in
stage2) stage2 ;;
*) stage1 ;;
esac
power_off
