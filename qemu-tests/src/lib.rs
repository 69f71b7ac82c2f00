//! Boots Kiln images in QEMU, reads the serial console and drives QEMU over QMP.
