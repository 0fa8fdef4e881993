#!/bin/busybox sh
# The VFIO checks inside the VM: package nhi/vfio on a real kernel. qemu
# gives the guest an emulated Intel IOMMU (intel_iommu=on, interrupt
# remapping) and its edu test device (PCI 1234:11e8); this binds the edu to
# vfio-pci and runs vfioedu (test/vm/cmd/vfioedu), which drives it through
# nhi/vfio's own Open, BAR0 accessors, AllocDMA and interrupt eventfds.
# Sourced by init.sh, which defines ok, bad and skip. The checks, in order
# (vm.sh counts these names; vfioedu prints all but the first):
edu_checks="vfio-edu-bind vfio-edu-nhi-defaults vfio-edu-open vfio-edu-id vfio-edu-liveness
  vfio-edu-msi vfio-edu-dma-to-device vfio-edu-dma-from-device vfio-edu-iommu-fault vfio-edu-close"

# edu_not_run REASON: the device could not be bound; every check fails.
edu_not_run() {
  for c in $edu_checks; do bad "$c: $1"; done
  dmesg | grep -iE 'dmar|iommu|vfio' | tail -n 10
}

vfio_edu() {
  for m in $(cat /lib/modules/vfio.order); do
    insmod /lib/modules/$m.ko 2>>/tmp/vfio.err
  done
  addr=
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] && addr=${d##*/}
  done
  if [ -z "$addr" ]; then
    edu_not_run "no edu device (1234:11e8) on the PCI bus"
    return
  fi
  dev=/sys/bus/pci/devices/$addr
  group=$(readlink $dev/iommu_group)
  group=${group##*/}
  if [ -z "$group" ]; then
    edu_not_run "$addr is in no IOMMU group ($(ls /sys/kernel/iommu_groups | wc -l) groups; intel_iommu=on?)"
    return
  fi
  echo vfio-pci >$dev/driver_override
  echo "$addr" >/sys/bus/pci/drivers_probe 2>>/tmp/vfio.err
  driver=$(readlink $dev/driver)
  driver=${driver##*/}
  if [ "$driver" != vfio-pci ] || [ ! -c /dev/vfio/$group ]; then
    edu_not_run "$addr bound to '$driver', /dev/vfio/$group $([ -c /dev/vfio/$group ] || echo absent): $(cat /tmp/vfio.err)"
    return
  fi
  ok "vfio-edu-bind: $addr (1234:11e8) bound to vfio-pci, IOMMU group $group of $(ls /sys/kernel/iommu_groups | wc -l), /dev/vfio/$group"
  timeout 300 vfioedu "$addr" >/tmp/vfioedu.out 2>&1
  rc=$?
  while read -r verdict rest; do
    case $verdict in
      ok) ok "$rest" ;;
      bad) bad "$rest" ;;
      *) echo "vfioedu: $verdict $rest" ;;
    esac
  done </tmp/vfioedu.out
  if [ $rc != 0 ]; then
    echo "vfioedu exited $rc; the kernel's view:"
    dmesg | grep -iE 'dmar|iommu|vfio' | tail -n 10
  fi
}
vfio_edu
